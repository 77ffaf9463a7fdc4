"""bench/quality.py: the report on a tiny model and a fake prepared split; the inverse STFT, Griffin-Lim and metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.quality import (
    METHODS,
    METRICS,
    Clip,
    frame_f0,
    frames_gpe,
    griffin_lim,
    istft,
    log_mel_distance,
    main,
    mcd_db,
    pitch_errors,
    stft,
    tracked_pitch,
    vocode,
    yin,
)
from models.emphasis import Decoder
from models.generate.reference import Generator, StreamConfig
from models.wavenet import save_checkpoint
from tests.tiny import TINY_MEL, random_frames, tiny_model, write_prepared
from wavenet.features import MelSpec, log_mel, magnitudes

SPEC = MelSpec()  # the real frames: 16 kHz, 80 bands, hop 200


def voiced(seconds: float, f0: float, rate: int, seed: int) -> np.ndarray:
    """A speech-like test signal: harmonics of a gliding f0 under a syllable-rate envelope, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t))) / rate
    wav = sum(np.sin(k * phase) / k for k in range(1, 4))
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * 3 * t)
    return 0.3 * wav * envelope + 0.003 * rng.normal(size=len(t))


def test_report_on_a_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rate = TINY_MEL.sample_rate
    clips = [(voiced(1.0, 90.0 + 20 * i, rate, seed=i), i % 2) for i in range(3)]
    write_prepared(tmp_path / "data", {"test": clips}, TINY_MEL, ["a", "b"])
    model = tiny_model("both")  # speakers 2, TINY_MEL frames
    model.cfg = dataclasses.replace(model.cfg, preemphasis=0.85)
    save_checkpoint(tmp_path / "tiny.pt", model)
    examples = tmp_path / "examples"

    assert main(["--data", str(tmp_path / "data"), "--model", str(tmp_path / "tiny.pt"), "--clips", "2",
                 "--streams", "2", "--write-examples", str(examples), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])

    assert result["clips"] == 2 and result["seconds"] == pytest.approx(2.0)
    assert result["command"].startswith("python bench/quality.py --data ")
    for method in METHODS:
        assert set(METRICS) <= set(result[method]), method
        assert all(isinstance(result[method][k], float) for k in ("mcd_db", "log_mel_distance"))
        assert result[method]["pesq_wb"] is None or 1.0 <= result[method]["pesq_wb"] <= 4.7
    assert result["preemphasis"] == 0.85
    assert result["frames_pitch_gpe"] is None or 0.0 <= result["frames_pitch_gpe"] <= 1.0
    for label in ("model (vocoded)", "μ-law 8-bit copy", "μ-law copy, pre-emphasis 0.85", "Griffin-Lim (64 it.)"):
        assert label in out

    # The μ-law copy is close to the original; noise of the same level (and an untrained model) are not.
    chosen = [clips[0][0], clips[2][0]]  # --clips 2 of 3: evenly spaced, the first and the last
    rng = np.random.default_rng(9)
    noise = np.mean([log_mel_distance(log_mel(x, TINY_MEL), log_mel(rng.normal(size=len(x)) * x.std(), TINY_MEL))
                     for x in chosen])
    assert result["mulaw_copy"]["log_mel_distance"] < 0.25 * noise
    assert result["emphasis_copy"]["log_mel_distance"] < result["mulaw_copy"]["log_mel_distance"]  # shaped noise
    assert result["mulaw_copy"]["log_mel_distance"] < result["model"]["log_mel_distance"]
    assert result["mulaw_copy"]["pesq_wb"] > result["model"]["pesq_wb"]
    assert result["mulaw_copy"]["gpe"] == 0.0 and result["mulaw_copy"]["vde"] < 0.05  # the copy keeps the pitch
    assert result["model"]["vde"] > 0.5  # an untrained model's noise is not voiced where the original is
    assert result["griffin_lim"]["log_mel_distance"] < 0.25 * noise

    written = sorted(p.name for p in examples.iterdir())
    assert written == [f"000-xx-level-clip0-{k}.flac" for k in ("griffin-lim", "original", "vocoded")]
    audio, got_rate = sf.read(examples / written[1])
    assert got_rate == rate and len(audio) == rate


def test_vocoding_passes_the_classes_through_the_models_output_filter() -> None:
    model = tiny_model("both")
    model.cfg = dataclasses.replace(model.cfg, preemphasis=0.85)
    hop, frames = TINY_MEL.hop, random_frames(30, TINY_MEL.n_mels)
    clip = Clip(index=2, key="xx/level/clip2", speaker=1, audio=np.zeros(30 * hop, np.float32), frames=frames,
                n_frames=30)
    vocoded = vocode(Generator(model), [clip], hop, streams=1, temperature=1.0, seed=4)[2]

    gen = Generator(model)
    sid = gen.open(StreamConfig(speaker=1, features=True, seed=4 + 2, temperature=1.0, length=30 * hop))
    gen.push_frames(sid, frames)
    gen.end_frames(sid)
    assert np.array_equal(vocoded, Decoder(0.85)(gen.generate(30 * hop, [sid])[sid]))


def test_given_pitch_is_the_trackers_reading_of_the_compared_part_and_reaches_the_stream() -> None:
    spec = MelSpec(n_mels=8, hop=200, win=800, n_fft=1024)
    t = np.arange(40 * 200) / 16000
    tone = (0.3 * sum(np.sin(2 * np.pi * k * 140.0 * t) / k for k in range(1, 4))).astype(np.float32)
    clip = Clip(index=0, key="xx/level/tone", speaker=0, audio=tone[: 30 * 200], frames=random_frames(40, 8),
                n_frames=30)
    rows = tracked_pitch(clip, spec)
    assert rows.shape == (40, 2) and np.isnan(rows[30:]).all()  # past the compared part: the model predicts
    voiced = rows[:30, 0] > 0
    assert voiced.sum() >= 20 and np.allclose(rows[:30, 0][voiced], 140.0, rtol=0.02)

    model = tiny_model("pitch")
    hop, frames = TINY_MEL.hop, random_frames(30, TINY_MEL.n_mels)
    given = np.stack([np.full(30, 150.0), np.full(30, 0.8)], axis=1).astype(np.float32)
    small = Clip(index=1, key="xx/level/clip1", speaker=1, audio=np.zeros(30 * hop, np.float32), frames=frames,
                 n_frames=30)
    vocoded = vocode(Generator(model), [small], hop, streams=1, temperature=1.0, seed=4, given_pitch={1: given})[1]
    gen = Generator(model)
    sid = gen.open(StreamConfig(speaker=1, features=True, seed=4 + 1, temperature=1.0, length=30 * hop))
    gen.push_frames(sid, frames, given)
    gen.end_frames(sid)
    assert np.array_equal(vocoded, Decoder(model.cfg.preemphasis)(gen.generate(30 * hop, [sid])[sid]))
    assert not np.array_equal(vocoded, vocode(Generator(model), [small], hop, streams=1, temperature=1.0, seed=4)[1])


def test_stft_matches_features_and_inverts_exactly() -> None:
    x = np.random.default_rng(0).normal(size=SPEC.sample_rate // 2) * 0.1
    spectrum = stft(x, SPEC)
    np.testing.assert_allclose(np.abs(spectrum), magnitudes(x, SPEC), atol=1e-9)
    np.testing.assert_allclose(istft(spectrum, SPEC), x, atol=1e-9)


def test_griffin_lim_reconstructs_a_tone() -> None:
    t = np.arange(SPEC.sample_rate) / SPEC.sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    frames = log_mel(tone, SPEC)
    rebuilt = griffin_lim(frames, SPEC)
    assert len(rebuilt) == len(tone)
    got = log_mel(rebuilt, SPEC)
    noise = log_mel_distance(frames, log_mel(np.random.default_rng(1).normal(size=len(t)) * tone.std(), SPEC))
    assert log_mel_distance(frames, got) < min(1.0, 0.15 * noise)
    loudest = frames.mean(axis=0).argmax()  # the tone's band: within 10 % (0.8 dB) in magnitude
    assert np.abs(got[2:-2, loudest] - frames[2:-2, loudest]).mean() < 0.1


def test_mcd_ignores_level_and_grows_with_spectral_change() -> None:
    frames = log_mel(voiced(0.5, 120.0, SPEC.sample_rate, seed=3), SPEC)
    assert mcd_db(frames, frames) == 0.0
    assert mcd_db(frames, frames + 1.5) == pytest.approx(0.0, abs=1e-6)  # c0 (level) excluded
    tilt = np.linspace(0.0, 1.0, SPEC.n_mels)[None, :]
    assert 0.0 < mcd_db(frames, frames + 0.5 * tilt) < mcd_db(frames, frames + tilt)


def harmonics(seconds: float, f0: float, weights: tuple[float, ...], rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * sum(w * np.sin(2 * np.pi * (k + 1) * f0 * t) for k, w in enumerate(weights))


@pytest.mark.parametrize("f0", [80.0, 150.0, 210.0, 330.0])
def test_yin_finds_the_fundamental_not_an_octave(f0: float) -> None:
    wav = harmonics(1.0, f0, (0.4, 1.0, 0.6))  # a weak fundamental under a strong second harmonic
    found, voiced = yin(wav, 16000)
    assert len(found) >= 90 and voiced.all()
    assert np.abs(found / f0 - 1).max() < 0.03  # the period to the sample, without interpolation


def test_yin_calls_noise_and_near_silence_unvoiced() -> None:
    rng = np.random.default_rng(0)
    assert yin(0.1 * rng.normal(size=16000), 16000)[1].mean() < 0.05
    quiet = harmonics(1.0, 120.0, (1.0, 0.5))
    quiet[8000:] *= 10 ** (-60 / 20)  # 60 dB down: below the silence floor
    f0, voiced = yin(quiet, 16000)
    assert voiced[:44].all() and not voiced[50:].any() and (f0[50:] == 0).all()  # frame i starts at 10 i ms


def test_pitch_errors_count_wrong_f0_and_wrong_voicing() -> None:
    a = harmonics(1.0, 150.0, (1.0, 0.5, 0.3))

    def errors(output: np.ndarray) -> tuple[float, float]:
        return pitch_errors(yin(a, 16000), yin(output, 16000))

    assert errors(a) == (0.0, 0.0)
    assert errors(harmonics(1.0, 155.0, (1.0, 0.5, 0.3))) == (0.0, 0.0)  # 3 %: not gross
    gpe, vde = errors(harmonics(1.0, 200.0, (1.0, 0.5, 0.3)))
    assert gpe == 1.0 and vde == 0.0
    half = a.copy()
    half[8000:] = 0.1 * np.random.default_rng(1).normal(size=8000)  # the second half turned to noise
    gpe, vde = errors(half)
    assert gpe == 0.0 and 0.4 < vde < 0.6
    assert np.isnan(errors(np.zeros_like(a))[0])  # nothing voiced in both


@pytest.mark.parametrize("f0", [100.0, 170.0, 260.0])
def test_the_pitch_read_from_log_mel_frames(f0: float) -> None:
    wav = harmonics(1.0, f0, (1.0, 0.7, 0.5, 0.3))
    frames = log_mel(wav.astype(np.float32), SPEC)
    found = frame_f0(frames, SPEC)[4:-4]  # away from the zero padding at the ends
    assert np.abs(found / f0 - 1).max() < 0.03
    assert frames_gpe(yin(wav, 16000), frames, SPEC) == 0.0
    other = log_mel(harmonics(1.0, f0 * 1.5, (1.0, 0.7, 0.5, 0.3)).astype(np.float32), SPEC)
    assert frames_gpe(yin(wav, 16000), other, SPEC) > 0.9
