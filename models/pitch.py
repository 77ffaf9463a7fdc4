"""Pitch: per-frame F0 and periodicity from Praat's tracker, and the sample-rate sine excitation they drive.

A pitch row i is (F0 in Hz, periodicity in [0, 1]) at sample i*hop of the signal. Between rows i and i+1 both are
linearly interpolated, as the per-frame gate biases are (models.wavenet.interpolate_frames), and the excitation of
a sample is v sin(m phi), v cos(m phi) for harmonics m = 1..K, with phi the accumulated phase of the interpolated F0
and v the interpolated periodicity (NSF's sine source, with voicing as its amplitude). The phase at each row is a
running sum over rows, so the excitation of any sample is a pure function of the rows before it.
"""

from __future__ import annotations

import math

import numpy as np

F0_MIN, F0_MAX = 60.0, 400.0  # Hz: the tracker's search range, and the range any F0 is clamped to
HOLD_F0 = 120.0  # Hz held before the first voiced row (its phase is unheard: the amplitude there is 0)
TWO_PI = 2.0 * math.pi


def track(audio: np.ndarray, sample_rate: int, hop: int, n_rows: int) -> np.ndarray:
    """(n_rows, 2) float32 pitch rows of a signal: F0 at sample i*hop (0 where unvoiced) and periodicity (Praat's
    autocorrelation strength where voiced, else 0), from Praat's autocorrelation tracker (praat-parselmouth)."""
    import parselmouth  # the training side's dependency only

    rows = np.zeros((n_rows, 2), np.float32)
    try:
        pitch = parselmouth.Sound(np.asarray(audio, np.float64), sample_rate).to_pitch_ac(
            time_step=hop / sample_rate, pitch_floor=F0_MIN, pitch_ceiling=F0_MAX)
    except parselmouth.PraatError:  # shorter than the tracker's window: no pitch
        return rows
    f0 = pitch.selected_array["frequency"]
    strength = np.where(f0 > 0, pitch.selected_array["strength"], 0.0)
    voiced = f0 > 0
    if not voiced.any():
        return rows
    times = pitch.xs() * sample_rate  # sample positions of the tracker's frames
    at = np.arange(n_rows) * hop
    log_f0 = np.interp(times, times[voiced], np.log(f0[voiced]))  # unvoiced frames bridged, for interpolation
    is_voiced = np.interp(at, times, voiced.astype(np.float64)) >= 0.5
    rows[:, 0] = np.where(is_voiced, np.exp(np.interp(at, times, log_f0)), 0.0)
    rows[:, 1] = np.where(is_voiced, np.clip(np.interp(at, times, strength), 0.0, 1.0), 0.0)
    return rows


def hold_unvoiced(f0: np.ndarray, last: float = HOLD_F0) -> np.ndarray:
    """F0 rows with each unvoiced (0) row holding the last voiced value before it (last: the value before the
    first row), clamped to [F0_MIN, F0_MAX]: causal, so a stream needs no rows ahead to fill a gap."""
    index = np.arange(len(f0))
    source = np.maximum.accumulate(np.where(f0 > 0, index, -1))
    held = np.where(source >= 0, f0[np.maximum(source, 0)], last)
    return np.clip(held, F0_MIN, F0_MAX).astype(np.float64)


def with_given(predicted: np.ndarray, given: np.ndarray, last: float = HOLD_F0) -> np.ndarray:
    """(n, 2) float64 pitch rows, F0 held (hold_unvoiced, after `last`) and periodicity: the predicted rows, (n, 2),
    where `given` (n, 2), a caller's F0 (0: unvoiced) and periodicity, is NaN, else the caller's. A given F0 with a
    NaN periodicity keeps the predicted periodicity where voiced and has 0 where unvoiced."""
    predicted, given = np.asarray(predicted, np.float64), np.asarray(given, np.float64)
    f0_given, per_given = given[:, 0], given[:, 1]
    has = ~np.isnan(f0_given)
    voiced_default = np.where(f0_given > 0, predicted[:, 1], 0.0)
    periodicity = np.where(has, np.where(np.isnan(per_given), voiced_default, per_given), predicted[:, 1])
    f0 = hold_unvoiced(np.where(has, f0_given, predicted[:, 0]), last)
    return np.stack([f0, periodicity], axis=1)


def row_phases(f0: np.ndarray, hop: int, sample_rate: int) -> np.ndarray:
    """(n,) phase at samples 0, hop, ..., (n - 1) * hop of n held F0 rows, starting at 0."""
    return extend_phases(None, f0, hop, sample_rate)


def extend_phases(previous: tuple[float, float] | None, f0: np.ndarray, hop: int, sample_rate: int) -> np.ndarray:
    """The phases of the next held F0 rows, after the row (F0, phase) `previous` (None: these are the first, and
    begin at 0). One row at a time, each reduced to [0, 2 pi): the same bits however the rows are grouped."""
    phases = np.empty(len(f0))
    f_prev, phase = (float(f0[0]), -1.0) if previous is None else previous
    for i, f in enumerate(np.asarray(f0, np.float64).tolist()):
        if phase < 0:
            phase = 0.0
        else:
            phase = math.fmod(phase + (hop * f_prev + (f - f_prev) * (hop - 1) / 2.0) * (TWO_PI / sample_rate), TWO_PI)
        phases[i], f_prev = phase, f
    return phases


def _per_sample(rows: np.ndarray, positions: np.ndarray, hop: int) -> np.ndarray:
    """Rows (row 0 at sample 0) linearly interpolated to sample positions."""
    row, k = positions // hop, (positions % hop).astype(np.float64) / hop
    return rows[row] + (rows[row + 1] - rows[row]) * k


def excitation(f0: np.ndarray, periodicity: np.ndarray, phases: np.ndarray, hop: int, sample_rate: int,
               harmonics: int, start: int, count: int) -> np.ndarray:
    """(2 * harmonics, count) float32 excitation of samples [start, start + count), relative to the rows given:
    f0 (held), periodicity and phases are rows r0, r0 + 1, ... with start = (row index - r0) * hop + offset,
    and must reach the row after the last sample's."""
    positions = np.arange(start, start + count)
    row, k = positions // hop, (positions % hop).astype(np.float64)
    f_left, f_right = f0[row], f0[row + 1]
    phase = phases[row] + (k * f_left + (f_right - f_left) * k * (k - 1) / (2.0 * hop)) * (TWO_PI / sample_rate)
    amplitude = _per_sample(periodicity, positions, hop)
    m = np.arange(1, harmonics + 1, dtype=np.float64)[:, None]
    angle = m * phase[None, :]
    return np.concatenate([amplitude * np.sin(angle), amplitude * np.cos(angle)]).astype(np.float32)


def lag_reach(sample_rate: int, taps: int) -> tuple[int, int]:
    """(nearest, farthest): how many samples back from a position its pitch-lag taps read, at most F0's range."""
    return math.floor(sample_rate / F0_MAX) - taps // 2 - 1, math.ceil(sample_rate / F0_MIN) + taps // 2 + 1


def lag_taps(values: np.ndarray, values_start: int, f0: np.ndarray, periodicity: np.ndarray, hop: int,
             sample_rate: int, taps: int, start: int, count: int) -> np.ndarray:
    """(taps, count) float32 pitch-lag input of positions [start, start + count) (FARGAN's): the signal one period
    back, v * y(t - T(t) + j) for j = -(taps // 2) .. taps // 2, T = sample_rate / F0 interpolated to the sample
    (fractional lags linearly interpolated), v the periodicity. values: the signal y (the μ-law domain, companded)
    at positions values_start, values_start + 1, ..., covering what lag_reach says; positions and rows relative
    as in excitation()."""
    positions = np.arange(start, start + count)
    lag = sample_rate / _per_sample(f0, positions, hop)
    amplitude = _per_sample(periodicity, positions, hop)
    out = np.empty((taps, count))
    for i, j in enumerate(range(-(taps // 2), taps // 2 + 1)):
        at = positions - lag + j - values_start
        lo = np.floor(at).astype(np.int64)
        frac = at - lo
        out[i] = amplitude * (values[lo] * (1.0 - frac) + values[lo + 1] * frac)
    return out.astype(np.float32)


def companded(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """μ-law classes as the μ-law domain's values in [-1, 1], silence 0: what the pitch-lag taps read."""
    return 2.0 * np.asarray(classes, np.float64) / (n_classes - 1) - 1.0


def sample_inputs(rows: np.ndarray, values: np.ndarray | None, values_start: int, hop: int, sample_rate: int,
                  harmonics: int, taps: int, start: int, count: int) -> np.ndarray:
    """(2 * harmonics + taps, count) float32 pitch inputs of positions [start, start + count): the excitation, then
    the lag taps. rows: (n, 3) held F0, periodicity and phase; positions and values as in lag_taps()."""
    f0, periodicity = rows[:, 0], rows[:, 1]
    parts = []
    if harmonics:
        parts.append(excitation(f0, periodicity, rows[:, 2], hop, sample_rate, harmonics, start, count))
    if taps:
        assert values is not None
        parts.append(lag_taps(values, values_start, f0, periodicity, hop, sample_rate, taps, start, count))
    return np.concatenate(parts)
