"""Log-mel frames from a waveform: the one implementation for data preparation, the client and tests (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LOG_FLOOR = 1e-5  # magnitudes below this are clamped before the log


@dataclass(frozen=True)
class MelSpec:
    """How frames are computed: frame i is the log-mel spectrum of a Hann window centred on sample i*hop + hop/2."""

    sample_rate: int = 16000
    n_mels: int = 80
    hop: int = 200
    win: int = 800
    n_fft: int = 1024
    fmin: float = 0.0
    fmax: float = 8000.0

    def describe(self) -> str:
        """One line saying exactly how frames are computed, for clients that compute their own."""
        return (
            f"frame i = ln(max(1e-5, M @ |rfft(hann({self.win}) * x[i*{self.hop} + {self.hop // 2} - {self.win // 2} "
            f"+ n], n_fft={self.n_fft})|)), M = {self.n_mels} HTK-scale triangular filters "
            f"{self.fmin:g}-{self.fmax:g} Hz with Slaney area normalisation; x is float in [-1, 1] at "
            f"{self.sample_rate} Hz, zero outside the signal; a signal of N samples has N // {self.hop} frames"
        )


def n_frames(n_samples: int, spec: MelSpec) -> int:
    """Frames a signal of n_samples has: one per whole hop."""
    return n_samples // spec.hop


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(spec: MelSpec) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, each normalised to unit area per Hz."""
    fft_hz = np.linspace(0.0, spec.sample_rate / 2, spec.n_fft // 2 + 1)
    edges_mel = np.linspace(_hz_to_mel(np.array(spec.fmin)), _hz_to_mel(np.array(spec.fmax)), spec.n_mels + 2)
    edges_hz = _mel_to_hz(edges_mel)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank *= (2.0 / (upper - lower))  # Slaney normalisation
    bank.setflags(write=False)
    return bank.astype(np.float32)


@lru_cache(maxsize=8)
def _window(spec: MelSpec) -> np.ndarray:
    window = np.zeros(spec.n_fft, dtype=np.float64)
    start = (spec.n_fft - spec.win) // 2
    window[start:start + spec.win] = np.hanning(spec.win + 1)[:-1]  # periodic Hann
    window.setflags(write=False)
    return window


def magnitudes(wav: np.ndarray, spec: MelSpec, first: int = 0, count: int | None = None,
               offset: int = 0) -> np.ndarray:
    """(frames, n_fft // 2 + 1) STFT magnitudes on the frame grid of log_mel: frames first .. first + count (default:
    all the frames of wav) of a signal zero outside it, of which wav holds the samples from `offset` on (a stream's
    tail: the frames asked for must not reach before it)."""
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1:
        raise ValueError(f"waveform must be 1-D, got shape {wav.shape}")
    count = n_frames(len(wav), spec) - first if count is None else count
    half = spec.n_fft // 2
    starts = (first + np.arange(count)) * spec.hop + spec.hop // 2 - half  # window starts in the signal
    if count and offset and starts[0] < offset:
        raise ValueError(f"frame {first} reaches sample {starts[0]}, before the {offset} held from")
    padded = np.pad(wav, (half, half + spec.hop))
    index = (starts - offset + half)[:, None] + np.arange(spec.n_fft)[None, :]
    if count and index.max() >= len(padded):
        padded = np.pad(padded, (0, index.max() + 1 - len(padded)))
    return np.abs(np.fft.rfft(padded[index] * _window(spec), axis=1))


def log_mel(wav: np.ndarray, spec: MelSpec, first: int = 0, count: int | None = None, offset: int = 0) -> np.ndarray:
    """(frames, n_mels) float32 log-mel frames of a float waveform in [-1, 1] (a range of them: see magnitudes)."""
    mel = magnitudes(wav, spec, first, count, offset) @ mel_filterbank(spec).T.astype(np.float64)
    return np.log(np.maximum(mel, LOG_FLOOR)).astype(np.float32)


def frames_ready(samples: int, spec: MelSpec) -> int:
    """Frames of a stream computable from its first `samples` samples with more to come: a frame needs the signal
    up to half an FFT past its window's centre."""
    return max(0, (samples - spec.hop // 2 - spec.n_fft // 2) // spec.hop + 1)
