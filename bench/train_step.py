"""Training speed: one optimizer step of a model's shape (the bundled one's by default), eager against torch.compile.

Each arm builds a fresh model and times the step `wavenet-train` runs (forward and loss under bf16 autocast, backward,
gradient clip, AdamW, EMA update, the loss read back), on a fixed random batch of the real shapes; one arm leaves out
everything after the backward pass. The first step (cuDNN's search, compilation) is reported apart. With prepared
data (--data), it also times making one batch on the host, on one thread, as wavenet-train's workers do: a device
step shorter than that waits on its input. Prints a table, then one JSON line with the speed of each arm relative to
the eager step. Run:
python bench/train_step.py [--model models/default.pt] [--device cuda] [--batch 32] [--window 8000]
    [--arms eager,compiled] [--data data/fillets] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from models.train import TrainConfig, load_split, loss_bits, optimizer_step, training_batch, windows
from models.wavenet import WaveNet, WaveNetConfig, frame_context, load_checkpoint

ARMS = ("eager", "forward-backward", "compiled")


def synthetic_batch(cfg: WaveNetConfig, batch: int, window: int, device: torch.device) -> dict[str, torch.Tensor]:
    assert cfg.mel is not None
    left, right = frame_context(cfg)
    g = torch.Generator().manual_seed(0)
    return {
        "inputs": torch.randint(0, cfg.classes, (batch, window), generator=g).to(device),
        "targets": torch.randint(0, cfg.classes, (batch, window), generator=g).to(device),
        "frames": torch.randn(batch, cfg.mel.n_mels, window // cfg.mel.hop + left + right, generator=g).to(device),
        "speaker": torch.randint(0, cfg.speakers, (batch,), generator=g).to(device),
        "free": (torch.rand(batch, generator=g) < 0.1).to(device),
    }


def make_step(arm: str, cfg: WaveNetConfig, batch: dict[str, torch.Tensor], device: torch.device) -> Callable[[], None]:
    """The training step of one arm: wavenet-train's own (models.train.optimizer_step, the loss read back as the
    trainer does), or its forward and backward passes alone."""
    torch.manual_seed(0)
    model = WaveNet(cfg).to(device).train()  # fresh weights: the speed depends on the shape alone
    ema = copy.deepcopy(model).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    forward = torch.compile(model) if arm == "compiled" else model
    tc = dataclasses.replace(TrainConfig(), bf16=True)

    def step() -> None:
        if arm == "forward-backward":
            optimizer.zero_grad(set_to_none=True)
            loss_bits(forward, cfg, batch, batch["free"], bf16=True).backward()
        else:
            float(optimizer_step(forward, model, ema, optimizer, batch, tc, tc.steps).detach())

    return step


def seconds(step: Callable[[], None], reps: int, device: torch.device) -> tuple[float, float]:
    """(the first step, the mean of `reps` steps after 3 warm-up steps), in seconds."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - start
    for _ in range(3):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        step()
    sync()
    return first, (time.perf_counter() - start) / reps


def batch_seconds(data: Path, cfg: WaveNetConfig, batch: int, window: int, reps: int) -> float:
    """Seconds wavenet-train's worker takes to make one batch of the training split on one thread (after one)."""
    w = windows(load_split(data, "train"), cfg)
    tc = dataclasses.replace(TrainConfig(), batch_size=batch, window=window)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        training_batch(w, tc, 0, 0)
        start = time.perf_counter()
        for step in range(1, reps + 1):
            training_batch(w, tc, 0, step)
        return (time.perf_counter() - start) / reps
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="models/default.pt", help="the checkpoint whose shape is timed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, help="windows per step (wavenet-train --batch-size; default 32)")
    p.add_argument("--window", type=int,
                   help="samples per window, rounded down to whole hops as wavenet-train does (default 8000)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    p.add_argument("--reps", type=int, help="timed steps per arm (default 30)")
    p.add_argument("--data", type=Path, default=None,
                   help="prepared data for the model (wavenet-prepare --out), to time making a batch")
    p.add_argument("--quick", action="store_true",
                   help="defaults of batch 2, 1,600-sample windows, 3 steps (smoke test)")
    args = p.parse_args(argv)
    for name, full, quick in (("batch", 32, 2), ("window", 8000, 1600), ("reps", 30, 3)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    arms = args.arms.split(",")
    if unknown := [a for a in arms if a not in ARMS]:
        p.error(f"--arms: unknown {', '.join(unknown)} (have {', '.join(ARMS)})")
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    cfg = load_checkpoint(args.model).cfg
    if cfg.mel is None:
        p.error(f"--model: {args.model} has no mel conditioning (wavenet-train needs it)")
    args.window -= args.window % cfg.mel.hop
    if args.window <= 0:
        p.error(f"--window: shorter than one hop ({cfg.mel.hop} samples)")
    batch = synthetic_batch(cfg, args.batch, args.window, device)
    samples = args.batch * args.window

    measured = {arm: seconds(make_step(arm, cfg, batch, device), args.reps, device) for arm in arms}
    host = None if args.data is None else batch_seconds(args.data, cfg, args.batch, args.window, args.reps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {name}, torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model}'s shape; "
          f"batch {args.batch} x {args.window} samples, bf16 autocast; {args.reps} timed steps per arm")
    print(f"{'arm':<18} {'first step (s)':>14} {'step (ms)':>10} {'M samples/s':>12} {'vs eager':>9}")
    base = measured["eager"][1] if "eager" in measured else None  # no eager arm: no ratios, not ones to itself

    def vs_eager(s: float) -> str:
        return "-" if base is None else f"{base / s:.2f}x"

    for arm, (first, step) in measured.items():
        print(f"{arm:<18} {first:>14.1f} {1000 * step:>10.2f} {samples / step / 1e6:>12.3f} {vs_eager(step):>9}")
    if host is not None:
        print(f"{'a batch (host)':<18} {'':>14} {1000 * host:>10.2f} {samples / host / 1e6:>12.3f} {vs_eager(host):>9}"
              "   (one thread, from --data)")
    print(json.dumps({
        "device": name, "model": args.model, "batch": args.batch, "window": args.window,
        "step_ms": {arm: round(1000 * s, 3) for arm, (_, s) in measured.items()},
        "first_step_s": {arm: round(f, 2) for arm, (f, _) in measured.items()},
        "samples_per_s": {arm: round(samples / s) for arm, (_, s) in measured.items()},
        "speed_vs_eager": None if base is None else {arm: round(base / s, 3) for arm, (_, s) in measured.items()},
        "batch_ms": None if host is None else round(1000 * host, 3),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
