"""Compiled generator speed (models/generate/compiled.py) against the reference, on the default model's shape, and
bf16's cost.

Measures, in one run: the reference generator (1 stream), the compiled one for 1 stream on 1 thread, and batched
totals for 1, 4, 8, 16 and 32 streams on 2 threads, each in fp32 and bf16, and one mel-conditioned stream of the
same shape with pitch-lag taps; 1 stream on every variant this CPU runs
(avx512, avx2, generic: each in the precision it defaults to); then the exactness of each precision
against the reference (teacher-forced logits) and what bf16 does to sampled audio. Every rate is end to end through
Generator.generate() in chunks of --chunk steps (bias building and bookkeeping included).

Prints a table, then one JSON line. Run: python bench/engine.py [--quick] [--checkpoint runs/x/checkpoint.pt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.shapes import DEFAULT, LAG, print_rows, random_model
from models.generate.compiled import VARIANTS, FastGenerator, engine_module
from models.generate.reference import Generator, StreamConfig
from models.wavenet import load_checkpoint
from wavenet.mulaw import SILENCE

BUNDLED = os.path.join(os.path.dirname(__file__), "..", "models", "default.pt")
BATCHES = (1, 4, 8, 16, 32)


def best_rate(gen: Generator, chunk: int, seconds: float, reps: int, before: Callable[[], None]) -> float:
    """Samples per second of generate(chunk) calls, each after before(); the best of `reps` runs of seconds / reps
    each (the least disturbed by whatever else the machine does)."""
    best = 0.0
    for _ in range(reps):
        made = 0
        start = time.perf_counter()
        while True:
            before()
            out = gen.generate(chunk)
            made += sum(len(v) for v in out.values())
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / reps:
                break
        best = max(best, made / elapsed)
    return best


def rate(gen: Generator, streams: int, seconds: float, chunk: int, reps: int = 3) -> float:
    """Total samples per second of `streams` free-running streams through generate(), best of reps."""
    sids = [gen.open(StreamConfig(speaker=i % 5, seed=i)) for i in range(streams)]
    gen.generate(min(chunk, 64))  # warm-up: caches, first-call costs
    best = best_rate(gen, chunk, seconds, reps, lambda: None)
    for sid in sids:
        gen.close(sid)
    return best


def feature_rate(gen: Generator, streams: int, seconds: float, chunk: int, reps: int = 3) -> float:
    """As rate(), for mel-conditioned streams fed random frames as they go (per-frame biases interpolated per step)."""
    assert gen.cfg.mel is not None
    n_mels, hop = gen.cfg.mel.n_mels, gen.cfg.mel.hop
    rng = np.random.default_rng(0)
    sids = [gen.open(StreamConfig(speaker=i % 5, seed=i, features=True)) for i in range(streams)]

    def feed() -> None:
        for sid in sids:
            while gen.ready(sid) < chunk:
                gen.push_frames(sid, rng.normal(size=(chunk // hop + 4, n_mels)).astype(np.float32))

    feed()
    gen.generate(min(chunk, 64))
    best = best_rate(gen, chunk, seconds, reps, feed)
    for sid in sids:
        gen.close(sid)
    return best


def engine_only_rate(gen: FastGenerator, streams: int, seconds: float, chunk: int, reps: int = 3) -> float:
    """Samples per second of the engine call alone (the chunk's biases built once and reused), best of reps."""
    sids = [gen.open(StreamConfig(speaker=i % 5, seed=i)) for i in range(streams)]
    states = [gen.streams[sid] for sid in sids]
    bias = gen._chunk_bias(states, [chunk] * streams, chunk)
    seeds = np.arange(streams, dtype=np.uint64)
    temps = np.ones(streams)
    counts = [chunk] * streams
    gen._run_chunk(states, counts, bias, seeds, temps)
    best = 0.0
    for _ in range(reps):
        made = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds / reps:
            gen._run_chunk(states, counts, bias, seeds, temps)
            made += chunk * streams
        best = max(best, made / (time.perf_counter() - start))
    for sid in sids:
        gen.close(sid)
    return best


def teacher_forced(gen: Generator, classes: np.ndarray, streams: int = 2) -> np.ndarray:
    """(steps, streams, classes) logits, teacher-forced on `classes` (row i offset by i)."""
    sids = [gen.open(StreamConfig(speaker=i % max(1, gen.cfg.speakers), seed=i)) for i in range(streams)]
    inputs = np.concatenate([[SILENCE], classes[:-1]])
    shifts = np.arange(streams)
    out = [gen.step_logits(sids, (inputs[t] + shifts) % gen.cfg.classes) for t in range(len(classes))]
    for sid in sids:
        gen.close(sid)
    return np.array(out)


def free_run(gen: Generator, n: int, temperature: float) -> np.ndarray:
    sid = gen.open(StreamConfig(seed=42, temperature=temperature, length=n))
    parts = []
    while not gen.done(sid):
        parts.append(gen.generate(512)[sid])
    gen.close(sid)
    return np.concatenate(parts)


def softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    p.add_argument("--chunk", type=int, default=512, help="steps per generate() call")
    p.add_argument("--checkpoint", default=BUNDLED if os.path.exists(BUNDLED) else None,
                   help="also measure exactness on this trained model (default: the bundled one, if present)")
    args = p.parse_args(argv)
    measured = measure(args.quick, args.chunk, args.checkpoint)
    if measured is None:
        print("compiled generator not built: nothing to measure")
        return 1
    header, rows, result = measured
    print(header)
    print_rows(rows)
    print(json.dumps(result))
    return 0


def measure(quick: bool, chunk: int, checkpoint: str | None) -> tuple[str, list[tuple[str, str]], dict] | None:
    """(header line, table rows, JSON fields) of the compiled generator's measurements; None if it is not built."""
    torch.set_num_threads(1)
    seconds = 0.3 if quick else 1.5  # per measurement, split into 3 runs
    module = engine_module()
    if module is None:
        return None
    model = random_model(DEFAULT)
    rows: list[tuple[str, str]] = []

    ref = rate(Generator(model), 1, seconds, 64)
    rows.append(("reference, 1 stream", f"{ref:,.0f}"))
    fast: dict[str, float] = {}
    engine_only: dict[str, float] = {}
    batched: dict[str, dict[str, float]] = {}
    features: dict[str, dict[str, float]] = {}
    lag_model = random_model(LAG)
    lag_features: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        one = FastGenerator(model, precision=precision, threads=1)  # type: ignore[arg-type]
        fast[precision] = rate(one, 1, seconds, chunk)
        engine_only[precision] = engine_only_rate(one, 1, seconds, chunk)
        rows.append((f"fast {precision}, 1 stream, 1 thread", f"{fast[precision]:,.0f}"))
        rows.append(("  engine call alone (no Python per chunk)", f"{engine_only[precision]:,.0f}"))
        two = FastGenerator(model, precision=precision, threads=2)  # type: ignore[arg-type]
        batched[precision] = {}
        for b in BATCHES:
            batched[precision][str(b)] = rate(two, b, seconds, chunk)
            rows.append((f"fast {precision}, {b} streams, 2 threads (total)", f"{batched[precision][str(b)]:,.0f}"))
        features[precision] = {
            "1": feature_rate(one, 1, seconds, chunk),
            "16": feature_rate(two, 16, seconds, chunk),
        }
        rows.append((f"fast {precision}, 1 mel-conditioned stream, 1 thread", f"{features[precision]['1']:,.0f}"))
        rows.append((f"fast {precision}, 16 mel-conditioned streams, 2 threads", f"{features[precision]['16']:,.0f}"))
        lag_one = FastGenerator(lag_model, precision=precision, threads=1)  # type: ignore[arg-type]
        lag_features[precision] = feature_rate(lag_one, 1, seconds, chunk)
        rows.append((f"fast {precision}, 1 mel-conditioned stream, pitch lag 3 taps, 1 thread",
                     f"{lag_features[precision]:,.0f}"))
    by_variant: dict[str, float] = {}
    for name in (v for v in VARIANTS if engine_module(v) is not None):
        gen = FastGenerator(model, threads=1, variant=name)  # the precision it defaults to
        by_variant[name] = rate(gen, 1, seconds, chunk)
        rows.append((f"variant {name} ({gen.precision}), 1 stream, 1 thread", f"{by_variant[name]:,.0f}"))

    # exactness: teacher-forced logits against the reference, on random weights and (optionally) a trained model
    exactness: dict[str, dict[str, float]] = {}
    models = {"random": model}
    if checkpoint:
        models["trained"] = load_checkpoint(checkpoint)  # its config is the default shape too
    steps = 300 if quick else 2000
    classes = np.random.default_rng(0).integers(0, 256, steps)
    for label, m in models.items():
        expected = teacher_forced(Generator(m), classes)
        p_ref = softmax(expected)
        for precision in ("fp32", "bf16"):
            got = teacher_forced(FastGenerator(m, precision=precision), classes)  # type: ignore[arg-type]
            p = softmax(got)
            kl = float(np.mean(np.sum(p_ref * (np.log(p_ref + 1e-300) - np.log(p + 1e-300)), -1)))
            key = f"{label}_{precision}"
            exactness[key] = {
                "max_abs_logit_diff": float(np.abs(got - expected).max()),
                "logit_range": float(expected.max() - expected.min()),
                "mean_kl_nats": kl,
                "max_prob_diff": float(np.abs(p - p_ref).max()),
                "argmax_agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
                # with the same history and uniform, inverse-CDF sampling picks differently with at most this chance
                "different_pick_chance": float(np.mean(np.abs(np.cumsum(p, -1) - np.cumsum(p_ref, -1)).sum(-1))),
            }
            diff = exactness[key]["max_abs_logit_diff"]
            rows.append((f"{label} {precision}: max |logit diff| vs reference", f"{diff:.2e}"))
            rows.append((f"{label} {precision}: mean KL(ref || fast), nats", f"{kl:.2e}"))
            chance = exactness[key]["different_pick_chance"]
            rows.append((f"{label} {precision}: chance a sample differs (same history, same u)", f"{chance:.2e}"))
        n = 400 if quick else 4000
        for temperature in (1.0, 0.0):
            a = free_run(FastGenerator(m, precision="fp32"), n, temperature)
            b = free_run(FastGenerator(m, precision="bf16"), n, temperature)
            diverged = np.flatnonzero(a != b)
            first = int(diverged[0]) if len(diverged) else n
            exactness[f"{label}_audio_T{temperature:g}"] = {"first_differing_sample": first, "of": n}
            rows.append((f"{label} audio T={temperature:g}: bf16 equals fp32 up to sample", f"{first} of {n}"))

    info = FastGenerator(model, precision="bf16").info()
    header = f"compiled variant: {module.VARIANT}, bf16 native: {info['native_bf16']}, chunk {chunk} steps"
    result = {
        "model": "default shape (20 layers, R=64, 2G=128, S=128, 256 classes), random weights",
        "platform": platform.processor() or platform.machine(),
        "variant": module.VARIANT,
        "chunk": chunk,
        "reference_samples_per_s": ref,
        "fast_precision": "bf16",  # the headline keys; the fp32 figures are under *_by_precision
        "fast_samples_per_s": fast["bf16"],
        "fast_samples_per_s_by_precision": fast,
        "fast_engine_only_samples_per_s": engine_only,
        "fast_batched_samples_per_s": batched["bf16"],
        "fast_batched_samples_per_s_by_precision": batched,
        "fast_features_samples_per_s_by_precision": features,  # mel-conditioned streams (feature frames fed live)
        "fast_lag_features_samples_per_s_by_precision": lag_features,  # 1 such stream, the model with pitch-lag taps
        "fast_samples_per_s_by_variant": by_variant,  # 1 stream, 1 thread, each variant's default precision
        "exactness": exactness,
    }
    return header, rows, result


if __name__ == "__main__":
    raise SystemExit(main())
