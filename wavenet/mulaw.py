"""μ-law companding between float audio in [-1, 1] and integer classes (numpy only)."""

from __future__ import annotations

import numpy as np

CLASSES = 256  # 8-bit μ-law: the WaveNet's output classes


def silence(classes: int = CLASSES) -> int:
    """The class of 0.0 (encode's rounding of the midpoint): the input before the first sample."""
    return classes // 2


SILENCE = silence()  # of the 8-bit classes


def encode(audio: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """Float audio in [-1, 1] to int64 classes in [0, classes)."""
    mu = classes - 1
    x = np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.floor((y + 1.0) / 2.0 * mu + 0.5).astype(np.int64)


def decode(classes_: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """Integer classes to float32 audio in [-1, 1]."""
    mu = classes - 1
    y = 2.0 * np.asarray(classes_, dtype=np.float64) / mu - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)
