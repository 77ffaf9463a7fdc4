"""Paired A/B of vocoder models on the same held-out clips, through the production generator.

Each arm (a model, and optionally its sampling temperature) vocodes the same clips with the same seeds; every clip's
scores (bench/quality.py's PESQ-wb, MCD, GPE, VDE) are averaged over the seeds, and each arm's per-clip differences
from the first arm (the control) are bootstrapped over clips: a mean difference whose 95 % interval excludes 0 is
a clear gain or loss. Griffin-Lim from the same frames is scored beside them. Prints a table, then one JSON line.

    python bench/ab.py runs/ab/control/checkpoint.pt runs/ab/pitch/checkpoint.pt
    python bench/ab.py models/default.pt models/default.pt@0.7        # a sampling temperature as an arm

An arm is PATH[@TEMPERATURE]: a serving model or a training checkpoint (its --weights: raw by default).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.quality import METRICS, Clip, Pitch, griffin_lim, load_split, scores, vocode, yin
from models.generate.compiled import engine_description, make_generator
from models.wavenet import checkpoint_temperature, load_checkpoint, read_checkpoint
from wavenet.features import MelSpec, log_mel

BOOTSTRAP = 4000  # resamples of the clips
SEED_STRIDE = 100_000  # seed k of clip i is SEED + k * SEED_STRIDE + i


@dataclass(frozen=True)
class Arm:
    name: str
    path: Path
    temperature: float


def parse_arm(text: str, default_temperature: float | None) -> Arm:
    """PATH[@TEMPERATURE] -> Arm, named by the run folder of a training checkpoint, else by the file; with no
    temperature, default_temperature, else the one the model is served at."""
    path_text, _, temperature = text.partition("@")
    path = Path(path_text)
    name = path.parent.name if path.name == "checkpoint.pt" else path.stem
    if temperature:
        return Arm(f"{name}@{float(temperature):g}", path, float(temperature))
    if default_temperature is None:
        default_temperature = checkpoint_temperature(read_checkpoint(path))
    return Arm(name, path, default_temperature)


def per_clip_scores(outputs: dict[int, np.ndarray], clips: list[Clip], spec: MelSpec,
                    references: dict[int, tuple[np.ndarray, Pitch]]) -> np.ndarray:
    """(clips, metrics) scores of one set of outputs."""
    return np.array([[scores(c.audio, outputs[c.index], *references[c.index], spec)[m] for m in METRICS]
                     for c in clips])


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """np.nanmean, NaN without a warning where every value is NaN (a metric no clip scored, e.g. an unvoiced GPE)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def bootstrap(differences: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-clip differences and its 95 % percentile interval over clips resampled with replacement (NaN
    clips, e.g. unvoiced ones for GPE, left out)."""
    d = differences[~np.isnan(differences)]
    if not len(d):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arms", nargs="+", help="PATH[@TEMPERATURE]; the first is the control")
    p.add_argument("--data", type=Path, default=Path("data/fillets"))
    p.add_argument("--split", default="test")
    p.add_argument("--clips", type=int, default=48, help="clips, evenly spaced over the split")
    p.add_argument("--max-seconds", type=float, default=4.0, help="compare at most this much of each clip")
    p.add_argument("--seeds", type=int, default=2, help="generations of each clip per arm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=None,
                   help="for arms that name none (default: each model's own, as it is served)")
    p.add_argument("--weights", choices=("model", "ema"), default="model", help="of training checkpoints")
    p.add_argument("--streams", type=int, default=48, help="clips generated at once as one batch")
    args = p.parse_args(argv)
    if args.clips < 2 or args.seeds < 1 or args.max_seconds <= 0:
        p.error("--clips must be >= 2, --seeds >= 1, --max-seconds > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    started = time.perf_counter()
    arms = [parse_arm(a, args.temperature) for a in args.arms]
    spec, clips, total = load_split(args.data, args.split, args.clips, args.max_seconds)
    references = {c.index: (log_mel(c.audio, spec), yin(c.audio, spec.sample_rate)) for c in clips}
    table: dict[str, np.ndarray] = {}
    info: dict[str, dict[str, object]] = {}
    for arm in arms:
        key = args.weights if "train_config" in read_checkpoint(arm.path) else "model"
        model = load_checkpoint(arm.path, key=key)
        if model.cfg.mel != spec:
            raise SystemExit(f"{arm.path} was trained on other frames than {args.data}")
        gen = make_generator(model)  # the server's: compiled, its default precision for this CPU
        generator = json.dumps(engine_description(gen))
        runs = []
        for k in range(args.seeds):
            outputs = vocode(gen, clips, spec.hop, args.streams, arm.temperature, args.seed + k * SEED_STRIDE)
            runs.append(per_clip_scores(outputs, clips, spec, references))
        table[arm.name] = nanmean(np.stack(runs), axis=0)
        info[arm.name] = {"path": str(arm.path), "weights": key, "temperature": arm.temperature,
                          "pitch_harmonics": model.cfg.pitch_harmonics, "generator": generator}
        print(f"{arm.name}: scored ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    gl = {c.index: griffin_lim(c.frames[: c.n_frames], spec, seed=args.seed) for c in clips}
    table["griffin-lim"] = per_clip_scores(gl, clips, spec, references)

    control = arms[0].name
    result: dict[str, object] = {"clips": len(clips), "clips_in_split": total, "split": args.split,
                                 "max_seconds": args.max_seconds, "seeds": args.seeds, "control": control,
                                 "arms": info}
    means = {name: {m: float(nanmean(v[:, j])) for j, m in enumerate(METRICS)} for name, v in table.items()}
    paired = {name: {m: bootstrap(table[name][:, j] - table[control][:, j]) for j, m in enumerate(METRICS)}
              for name in table if name != control}
    result.update({"means": means, "difference_from_control": paired,
                   "wall_s": round(time.perf_counter() - started, 1),
                   "command": shlex.join(["python", "bench/ab.py", *argv])})

    print(f"{len(clips)} {args.split} clips (of {total}), at most {args.max_seconds:g} s each, {args.seeds} seeds "
          f"per arm; differences from {control}: mean [95 % bootstrap interval over clips]")
    width = max(len(n) for n in table)
    print(f"{'':<{width}}  {'PESQ-wb':>24}  {'MCD (dB)':>24}  {'GPE':>24}  {'VDE':>24}")
    for name in table:
        cells = []
        for m in ("pesq_wb", "mcd_db", "gpe", "vde"):
            cell = f"{means[name][m]:.3f}"
            if name in paired:
                mean, lo, hi = paired[name][m]
                cell += f" {mean:+.3f} [{lo:+.3f},{hi:+.3f}]"
            cells.append(f"{cell:>24}")
        print(f"{name:<{width}}  " + "  ".join(cells))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
