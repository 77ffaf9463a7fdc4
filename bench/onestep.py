"""Where a vocoder's quality goes: sampled one step ahead from the true past, against running free.

Each clip's teacher-forced logits (the reference generator's step_logits, fed the clip's own classes) are sampled
at each position and decoded; the model's pre-emphasis is undone with the true previous sample (x̂[t] = ê[t] +
a·x[t−1]), so no error is carried from one sample to the next. The same clips are also generated the usual way,
running free from the frames. PESQ-wb of both against the original: the gap between them is what running on its
own past costs the model, the one-step figure what the width of each step's distribution costs. Prints a table,
then one JSON line.

    python bench/onestep.py [--model models/default.pt] [--clips 6] [--max-seconds 3]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from bench.quality import Clip, load_split, pesq_wb, vocode
from models import emphasis
from models.generate.reference import Generator, StreamConfig, sample, uniforms
from models.wavenet import WaveNet, load_checkpoint
from wavenet import mulaw

RULES = {"T=1.0": 1.0, "T=0.7": 0.7, "argmax": 0.0}


def one_step_classes(model: WaveNet, clips: list[Clip], hop: int, temperature: float, seed: int) -> list[np.ndarray]:
    """Each clip's classes sampled one step ahead from its true past (teacher forcing), all clips as one batch."""
    cfg = model.cfg
    gen = Generator(model)
    truth = [emphasis.encode(c.audio.astype(np.float64), cfg.preemphasis, cfg.classes) for c in clips]
    sids = []
    for clip in clips:
        sid = gen.open(StreamConfig(speaker=clip.speaker if cfg.speakers else 0, features=True,
                                    length=clip.n_frames * hop))
        gen.push_frames(sid, clip.frames)
        gen.end_frames(sid)
        sids.append(sid)
    picks = [np.zeros(len(t), np.int64) for t in truth]
    silence = mulaw.silence(cfg.classes)
    for t in range(max(len(x) for x in truth)):
        rows = [i for i, x in enumerate(truth) if t < len(x)]
        inputs = np.array([silence if t == 0 else truth[i][t - 1] for i in rows])
        logits = gen.step_logits([sids[i] for i in rows], inputs)
        u = uniforms(np.array([seed + i for i in rows], np.uint64), np.full(len(rows), t, np.uint64))
        for row, pick in zip(rows, sample(logits, np.full(len(rows), temperature), u)):
            picks[row][t] = pick
    return picks


def one_step_audio(classes: np.ndarray, original: np.ndarray, preemphasis: float, n_classes: int) -> np.ndarray:
    """x̂[t] = ê[t] + a·x[t−1]: the decoded one-step classes with the true previous sample's pre-emphasis term."""
    x = np.asarray(original, np.float64)
    previous = np.concatenate([[0.0], x[:-1]])
    return np.clip(mulaw.decode(classes, n_classes) + preemphasis * previous, -1.0, 1.0).astype(np.float32)


def mean_pesq(clips: list[Clip], outputs: list[np.ndarray], rate: int) -> float:
    return float(np.nanmean([pesq_wb(c.audio, out, rate) for c, out in zip(clips, outputs)]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data/fillets"), help="prepared data (wavenet-prepare --out)")
    p.add_argument("--model", type=Path, default=Path("models/default.pt"))
    p.add_argument("--clips", type=int, default=6, help="test clips, evenly spaced over the split")
    p.add_argument("--max-seconds", type=float, default=3.0, help="compare at most this much of each clip")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = load_checkpoint(args.model)
    spec, clips, _ = load_split(args.data, "test", args.clips, args.max_seconds)
    cfg = model.cfg
    results: dict[str, dict[str, float]] = {"one_step": {}, "free_running": {}}
    for name, temperature in RULES.items():
        picks = one_step_classes(model, clips, spec.hop, temperature, args.seed)
        audio = [one_step_audio(k, c.audio, cfg.preemphasis, cfg.classes) for k, c in zip(picks, clips)]
        results["one_step"][name] = round(mean_pesq(clips, audio, spec.sample_rate), 3)
        made = vocode(Generator(model), clips, spec.hop, len(clips), temperature, args.seed)
        results["free_running"][name] = round(mean_pesq(clips, [made[c.index] for c in clips], spec.sample_rate), 3)
    print(f"model {args.model}; {len(clips)} test clips, at most {args.max_seconds:g} s each; PESQ-wb")
    print(f"{'sampling':<10} {'one step ahead':>15} {'running free':>13}")
    for name in RULES:
        print(f"{name:<10} {results['one_step'][name]:>15.3f} {results['free_running'][name]:>13.3f}")
    print(json.dumps({**results, "clips": len(clips), "max_seconds": args.max_seconds, "model": str(args.model),
                      "command": "python bench/onestep.py " + shlex.join(argv)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
