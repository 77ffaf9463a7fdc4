"""Fast WaveNet generation's point, in PyTorch: naive recomputation of the receptive field against the queue
generator (models/generate/reference.py), batched, and its cost per sample against length (flat) and depth (linear).
The compiled engine is bench/engine.py's. Prints a table, then one JSON line. Run: python bench/queues.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

import torch

from bench.shapes import DEFAULT, random_model
from models.generate.reference import Generator, StreamConfig
from models.wavenet import WaveNet, WaveNetConfig, receptive_field
from wavenet.mulaw import SILENCE


def timed(fn: Callable[[], int]) -> float:
    """Samples per second of fn, which returns how many samples it made."""
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def naive(model: WaveNet, n: int) -> int:
    """Each sample recomputes the whole receptive field with the parallel model."""
    rf = receptive_field(model.cfg)
    history = [SILENCE] * rf
    speaker = torch.tensor([0])
    with torch.inference_mode():
        for _ in range(n):
            logits = model(torch.tensor([history[-rf:]]), None, speaker)[0, :, -1]
            history.append(int(torch.distributions.Categorical(logits=logits).sample()))
    return n


def queue(model: WaveNet, streams: int, n: int) -> int:
    """n samples for each of `streams` free-running streams, stepped as one batch."""
    gen = Generator(model)
    sids = [gen.open(StreamConfig(seed=i, length=n)) for i in range(streams)]
    while not all(gen.done(s) for s in sids):
        gen.generate(4000)
    return streams * n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the reference path")
    p.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    scale = 0.1 if args.quick else 1.0
    model = random_model(DEFAULT)
    rows: list[tuple[str, float]] = []

    queue(model, 1, 50)  # warm-up
    naive_rate = timed(lambda: naive(model, max(5, int(60 * scale))))
    rows.append(("naive (recompute receptive field), 1 stream", naive_rate))
    queue_rate = timed(lambda: queue(model, 1, max(200, int(3000 * scale))))
    rows.append(("queue generator, 1 stream", queue_rate))
    batched = {}
    for b in (8, 32):
        batched[str(b)] = timed(lambda b=b: queue(model, b, max(50, int(4000 * scale) // b)))
        rows.append((f"queue generator, {b} streams (total)", batched[str(b)]))

    lengths = [int(x * scale) or 1 for x in (500, 2000, 8000)]
    per_sample_us = {}
    for n in lengths:
        per_sample_us[n] = 1e6 / timed(lambda n=n: queue(model, 1, max(50, n)))
        rows.append((f"per-sample time (us) generating {n} samples", per_sample_us[n]))
    per_layer_us = {}
    for cycles in (1, 2, 3):
        cfg = WaveNetConfig(speakers=5, dilation_cycles=cycles)
        m = random_model(cfg)
        layers = 10 * cycles
        per_layer_us[layers] = 1e6 / timed(lambda m=m: queue(m, 1, max(100, int(1500 * scale))))
        rows.append((f"per-sample time (us) with {layers} layers", per_layer_us[layers]))

    print(f"machine: {platform.processor() or platform.machine()}, torch threads {args.threads}")
    print(f"config: 20 layers, R={DEFAULT.residual_channels}, G={DEFAULT.gate_channels}, "
          f"S={DEFAULT.skip_channels}, receptive field {receptive_field(DEFAULT)} samples")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>12,.1f}")
    result = {
        "naive_samples_per_s": round(naive_rate, 1),
        "queue_samples_per_s": round(queue_rate, 1),
        "queue_batched_samples_per_s": {k: round(v, 1) for k, v in batched.items()},
        "queue_speedup_over_naive": round(queue_rate / naive_rate, 1),
        "length_flatness": round(per_sample_us[lengths[-1]] / per_sample_us[lengths[0]], 3),
        "per_sample_us_by_layers": {str(k): round(v, 1) for k, v in per_layer_us.items()},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
