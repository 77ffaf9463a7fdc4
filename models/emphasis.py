"""Pre-emphasis of the audio a WaveNet models, and its inverse on what it generates (numpy only).

A model with `preemphasis` a > 0 predicts the μ-law classes of e[t] = x[t] - a x[t-1] rather than of x, and what
it generates goes through the inverse filter x[t] = e[t] + a x[t-1]. The filter shapes the noise of the 8-bit
classes and of sampling like the spectrum of speech, strong at low frequencies, where the ear hears it less (as in
LPCNet, a = 0.85). With a = 0 both directions are plain μ-law.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from wavenet import mulaw


def emphasize(audio: np.ndarray, a: float, previous: float = 0.0) -> np.ndarray:
    """e[t] = x[t] - a x[t-1], with x[-1] = previous; float64."""
    x = np.asarray(audio, np.float64)
    return x - a * np.concatenate([[previous], x[:-1]])


def deemphasize(emphasized: np.ndarray, a: float, last: float = 0.0) -> np.ndarray:
    """x[t] = e[t] + a x[t-1], with x[-1] = last; float64. Sample by sample, so cutting a stream into chunks
    anywhere gives the same bits."""
    steps = itertools.accumulate(np.asarray(emphasized, np.float64).tolist(), lambda x, e: e + a * x, initial=last)
    return np.fromiter(steps, np.float64, len(emphasized) + 1)[1:]


def encode(audio: np.ndarray, a: float, classes: int = mulaw.CLASSES, previous: float = 0.0) -> np.ndarray:
    """Audio in [-1, 1] to the classes a model with pre-emphasis a reads and predicts."""
    return mulaw.encode(emphasize(audio, a, previous), classes)


@dataclass
class Decoder:
    """A stream's classes to float32 audio in [-1, 1], chunk after chunk. `last` is the last sample before the
    stream's first (a prime's last sample); the filter runs on unclipped values and only the output is clipped."""

    a: float
    classes: int = mulaw.CLASSES
    last: float = 0.0

    def __call__(self, classes_: np.ndarray) -> np.ndarray:
        audio = mulaw.decode(classes_, self.classes)
        if self.a == 0.0 or len(audio) == 0:
            return audio
        x = deemphasize(audio, self.a, self.last)
        self.last = float(x[-1])
        return np.clip(x, -1.0, 1.0).astype(np.float32)
