"""Audio cleaning, the same for training data and for recordings a client vocodes: mono, resampled, trimmed,
loudness-normalised, cropped to whole hops, quantised. Pure functions of numpy arrays."""

from __future__ import annotations

import numpy as np
import soxr

from wavenet.features import MelSpec, log_mel

TRIM_DB = -40.0  # frames this far below the clip's loudest frame count as silence
TRIM_FRAME_S = 0.010
TRIM_MARGIN_S = 0.040  # kept around the voiced part
TARGET_DBFS = -20.0  # RMS of the voiced part after normalising
PEAK_LIMIT = 0.95


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(samples,) mean of a (samples, channels) or (samples,) signal."""
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(samples * rate_out / rate_in,) float64 signal at rate_out (soxr HQ)."""
    if rate_in == rate_out:
        return audio.astype(np.float64)
    return np.asarray(soxr.resample(audio.astype(np.float64), rate_in, rate_out, quality="HQ"), dtype=np.float64)


def frame_energies(audio: np.ndarray, frame: int) -> np.ndarray:
    """(ceil(samples / frame),) mean square of each frame, the last one zero-padded."""
    padded = np.pad(audio, (0, -len(audio) % frame))
    return np.mean(padded.reshape(-1, frame) ** 2, axis=1)


def voiced_frames(energies: np.ndarray, threshold_db: float = TRIM_DB) -> np.ndarray:
    """(frames,) bool: energy within threshold_db of the loudest frame (all False for a silent signal)."""
    peak = energies.max(initial=0.0)
    if peak <= 0.0:
        return np.zeros(len(energies), dtype=bool)
    return energies >= peak * 10.0 ** (threshold_db / 10.0)


def trim_bounds(audio: np.ndarray, rate: int, threshold_db: float = TRIM_DB,
                margin_s: float = TRIM_MARGIN_S) -> tuple[int, int]:
    """(start, end) sample range from the first to the last voiced frame plus a margin each side; (0, 0) if silent."""
    frame = max(1, round(TRIM_FRAME_S * rate))
    voiced = np.flatnonzero(voiced_frames(frame_energies(audio, frame), threshold_db))
    if len(voiced) == 0:
        return 0, 0
    margin = round(margin_s * rate)
    return max(0, voiced[0] * frame - margin), min(len(audio), (voiced[-1] + 1) * frame + margin)


def normalise_loudness(audio: np.ndarray, rate: int, target_dbfs: float = TARGET_DBFS,
                       peak_limit: float = PEAK_LIMIT) -> np.ndarray:
    """Signal scaled so its voiced frames have RMS target_dbfs, then scaled down if the peak would exceed peak_limit."""
    energies = frame_energies(audio, max(1, round(TRIM_FRAME_S * rate)))
    voiced = voiced_frames(energies)
    if not voiced.any():
        return audio
    gain = 10.0 ** (target_dbfs / 20.0) / np.sqrt(energies[voiced].mean())
    peak = np.abs(audio).max()
    return audio * min(gain, peak_limit / peak)


def crop_to_hops(audio: np.ndarray, hop: int) -> np.ndarray:
    """The signal without its last partial hop: length a multiple of hop."""
    return audio[:len(audio) // hop * hop]


def clean(audio: np.ndarray, rate_in: int, spec: MelSpec) -> np.ndarray:
    """(samples,) float64 mono, resampled, silence-trimmed, loudness-normalised and hop-cropped clip."""
    wav = resample(to_mono(audio), rate_in, spec.sample_rate)
    start, end = trim_bounds(wav, spec.sample_rate)
    wav = normalise_loudness(wav[start:end], spec.sample_rate)
    return crop_to_hops(wav, spec.hop)


def quantise(audio: np.ndarray) -> np.ndarray:
    """int16 samples of a float signal in [-1, 1] (scale 32768, clipped)."""
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def recording_frames(audio: np.ndarray, sample_rate: int, spec: MelSpec) -> np.ndarray:
    """(frames, n_mels) of a recording prepared as the training clips were: mono, resampled, loudness-normalised.

    audio: (samples,) or (samples, channels), as soundfile reads it; ValueError for any other shape (a
    channels-first array) or a recording shorter than one frame.
    """
    audio = np.asarray(audio, np.float64)
    if not (audio.ndim == 1 or (audio.ndim == 2 and audio.shape[1] <= audio.shape[0])):
        raise ValueError(f"audio: expected (samples,) or (samples, channels), got shape {audio.shape}"
                         + (" (channels first? pass audio.T)" if audio.ndim == 2 else ""))
    wav = resample(to_mono(audio), sample_rate, spec.sample_rate)
    wav = crop_to_hops(normalise_loudness(wav, spec.sample_rate), spec.hop)
    if not len(wav):
        raise ValueError(f"audio: {len(audio)} samples at {sample_rate} Hz is shorter than one frame "
                         f"({spec.hop} samples at {spec.sample_rate} Hz)")
    return log_mel(quantise(wav) / 32768.0, spec)
