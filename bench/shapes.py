"""What the generation benchmarks share: the default model's shape, random weights in it, and the table."""

from __future__ import annotations

import torch

from models.wavenet import WaveNet, WaveNetConfig

DEFAULT = WaveNetConfig(speakers=5)  # the default model's shape
LAG = WaveNetConfig(speakers=5, pitch_lag=3)  # the same with pitch-lag taps (docs/quality.md)


def random_model(cfg: WaveNetConfig) -> WaveNet:
    torch.manual_seed(0)
    return WaveNet(cfg).eval()


def print_rows(rows: list[tuple[str, str]], heading: str = "measurement (samples/s unless stated)") -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{heading:<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
