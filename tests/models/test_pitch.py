"""Pitch rows and the sine excitation: the tracker, the phase's running sum, and what a grown model starts as."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models import pitch
from models.wavenet import WaveNet, pad_frames
from tests.tiny import random_classes, random_frames, tiny_model

RATE, HOP = 16000, 200


def voice(f0: float, seconds: float, rate: int = RATE) -> np.ndarray:
    """A steady harmonic tone (ten harmonics falling 6 dB an octave) at f0 Hz."""
    t = np.arange(round(seconds * rate)) / rate
    return sum(np.sin(2 * np.pi * m * f0 * t) / m for m in range(1, 11)).astype(np.float64) * 0.2


def test_the_tracker_finds_a_voices_f0_and_calls_noise_unvoiced() -> None:
    audio = np.concatenate([voice(150.0, 0.6), np.random.default_rng(0).normal(0, 0.1, RATE // 2)])
    rows = pitch.track(audio, RATE, HOP, len(audio) // HOP)
    assert rows.shape == (len(audio) // HOP, 2) and rows.dtype == np.float32
    tone, noise = rows[8:40], rows[-30:]  # away from the tone's edges and the switch
    np.testing.assert_allclose(tone[:, 0], 150.0, rtol=0.01)
    assert (tone[:, 1] > 0.8).all()
    assert (noise[:, 0] == 0).all() and (noise[:, 1] == 0).all()


def test_a_signal_too_short_to_track_has_unvoiced_rows() -> None:
    rows = pitch.track(voice(150.0, 0.01), RATE, HOP, 1)
    assert rows.tolist() == [[0.0, 0.0]]


def test_unvoiced_rows_hold_the_last_voiced_f0_causally() -> None:
    f0 = np.array([0.0, 100.0, 0.0, 0.0, 500.0, 50.0, 0.0])
    assert pitch.hold_unvoiced(f0).tolist() == [pitch.HOLD_F0, 100.0, 100.0, 100.0, pitch.F0_MAX, pitch.F0_MIN,
                                                pitch.F0_MIN]


def test_a_steady_f0_gives_sines_of_its_harmonics_from_phase_zero() -> None:
    f0, rows = 125.0, 12
    held = np.full(rows + 1, f0)
    periodicity = np.full(rows + 1, 0.5)
    phases = pitch.row_phases(held, HOP, RATE)
    e = pitch.excitation(held, periodicity, phases, HOP, RATE, 3, 0, rows * HOP)
    t = np.arange(rows * HOP) / RATE
    for m in (1, 2, 3):
        np.testing.assert_allclose(e[m - 1], 0.5 * np.sin(2 * np.pi * m * f0 * t), atol=1e-5)
        np.testing.assert_allclose(e[3 + m - 1], 0.5 * np.cos(2 * np.pi * m * f0 * t), atol=1e-5)


def test_the_phase_runs_on_through_a_glide_without_a_jump() -> None:
    held = np.linspace(100.0, 300.0, 21)
    phases = pitch.row_phases(held, HOP, RATE)
    e = pitch.excitation(held, np.ones(21), phases, HOP, RATE, 1, 0, 20 * HOP)[0]
    # the sample-to-sample step of sin(phi) is bounded by the instantaneous frequency: no jump at row boundaries
    assert np.abs(np.diff(e)).max() <= 2 * np.pi * 300.0 / RATE * 1.001


def test_phases_have_the_same_bits_however_the_rows_are_grouped() -> None:
    f0 = np.random.default_rng(3).uniform(80, 300, 100)
    whole = pitch.extend_phases(None, f0, HOP, RATE)
    parts, previous = [], None
    for lo, hi in ((0, 1), (1, 17), (17, 18), (18, 100)):
        part = pitch.extend_phases(previous, f0[lo:hi], HOP, RATE)
        parts.append(part)
        previous = (f0[hi - 1], part[-1])
    assert np.array_equal(np.concatenate(parts), whole)


def grown(source: WaveNet) -> WaveNet:
    """source's weights in a model with pitch input, as wavenet-train --init grows it (new weights as made)."""
    model = WaveNet(dataclasses.replace(source.cfg, pitch_harmonics=4))
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in source.state_dict().items() if k in own}, strict=False)
    return model.eval()


def test_a_model_grown_with_pitch_input_starts_as_the_model_it_grew_from() -> None:
    source = tiny_model("both")
    model = grown(source)
    assert model.excitation_proj is not None and not model.excitation_proj.weight.any()
    cfg = source.cfg
    assert cfg.mel is not None
    n = 30
    inputs = torch.as_tensor(random_classes(n * cfg.mel.hop))[None]
    frames = pad_frames(torch.as_tensor(random_frames(n, cfg.mel.n_mels)).T[None], cfg)
    speaker = torch.tensor([1])
    with torch.no_grad():
        excitation = model.excitation_from_frames(frames)
        assert excitation.shape == (1, 8, n * cfg.mel.hop) and excitation.abs().max() > 0
        expected = source(inputs, frames, speaker)
        np.testing.assert_array_equal(model(inputs, frames, speaker, None, excitation).numpy(), expected.numpy())
        model.excitation_proj.weight.normal_()  # and the excitation then reaches the logits
        assert not torch.allclose(model(inputs, frames, speaker, None, excitation), expected)


def test_free_running_rows_get_no_excitation() -> None:
    model = tiny_model("pitch")
    cfg = model.cfg
    assert cfg.mel is not None
    n = 10
    inputs = torch.as_tensor(random_classes(2 * n * cfg.mel.hop).reshape(2, -1))
    frames = pad_frames(torch.as_tensor(random_frames(n, cfg.mel.n_mels)).T[None].expand(2, -1, -1), cfg)
    free, speaker = torch.tensor([True, False]), torch.tensor([0, 1])
    with torch.no_grad():
        excitation = model.excitation_from_frames(frames)
        with_it = model(inputs, frames, speaker, free, excitation)
        without = model(inputs, frames, speaker, free, torch.zeros_like(excitation))
    assert torch.equal(with_it[0], without[0]) and not torch.equal(with_it[1], without[1])


def test_the_lag_taps_of_a_periodic_signal_repeat_it() -> None:
    """A signal of period 100 samples and the pitch rows of its F0 (160 Hz): the centre tap one period back is the
    signal itself, the outer taps its neighbours; a periodicity of 0.5 halves them."""
    period, taps = 100, 3
    _, farthest = pitch.lag_reach(RATE, taps)
    t = np.arange(-farthest, 2000)
    values = np.sin(2 * np.pi * t / period) * np.cos(2 * np.pi * t / (period / 3))
    rows = np.full(2000 // HOP + 2, RATE / period)
    got = pitch.lag_taps(values, -farthest, rows, np.full_like(rows, 0.5), HOP, RATE, taps, 0, 2000)
    signal = values[farthest:]
    np.testing.assert_allclose(got[1], 0.5 * signal, atol=1e-6)
    np.testing.assert_allclose(got[0][1:], 0.5 * signal[:-1], atol=1e-6)
    np.testing.assert_allclose(got[2][:-1], 0.5 * signal[1:], atol=1e-6)


def test_lag_taps_read_only_samples_at_least_lag_reach_back() -> None:
    """Changing the signal at or after position - nearest changes no tap: what lets a chunk of `nearest` steps
    know its inputs before it runs."""
    taps = 3
    nearest, farthest = pitch.lag_reach(RATE, taps)
    rng = np.random.default_rng(0)
    values = rng.normal(size=farthest + 1000)
    rows = rng.uniform(pitch.F0_MIN, pitch.F0_MAX, 1000 // HOP + 2)
    position = 700
    before = pitch.lag_taps(values, -farthest, rows, np.ones_like(rows), HOP, RATE, taps, position, 1)
    changed = values.copy()
    changed[farthest + position - nearest + 1 :] += 1.0  # samples position - nearest + 1 onwards
    after = pitch.lag_taps(changed, -farthest, rows, np.ones_like(rows), HOP, RATE, taps, position, 1)
    assert np.array_equal(before, after)


def test_a_callers_pitch_replaces_the_prediction_frame_by_frame() -> None:
    predicted = np.array([[110.0, 0.9], [120.0, 0.8], [130.0, 0.7], [140.0, 0.6], [150.0, 0.5]])
    nan = np.nan
    given = np.array([[nan, nan], [200.0, nan], [0.0, nan], [0.0, 0.3], [250.0, 0.95]])
    rows = pitch.with_given(predicted, given, last=100.0)
    # not given: the prediction; F0 alone: the predicted periodicity where voiced, 0 where not; unvoiced rows hold
    assert rows.tolist() == [[110.0, 0.9], [200.0, 0.8], [200.0, 0.0], [200.0, pytest.approx(0.3)],
                             [250.0, pytest.approx(0.95)]]
    assert pitch.with_given(predicted[:1], np.array([[0.0, nan]]), last=100.0).tolist() == [[100.0, 0.0]]
    assert np.array_equal(pitch.with_given(predicted, np.full((5, 2), nan)), predicted)
