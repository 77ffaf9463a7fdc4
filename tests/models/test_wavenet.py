"""The parallel model: causality, μ-law, features and checkpoints."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from models.wavenet import (
    CheckpointError,
    WaveNet,
    WaveNetConfig,
    frame_context,
    frame_stats,
    load_checkpoint,
    lookahead_frames,
    pad_frames,
    receptive_field,
    save_checkpoint,
    set_frame_stats,
)
from tests.tiny import CONFIGS, random_classes, random_frames, tiny_model
from wavenet import mulaw
from wavenet.features import MelSpec, log_mel, n_frames


def _inputs_and_grads(model: WaveNet, t: int, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradient of output t with respect to every position's embedded input and every frame."""
    cfg = model.cfg
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: torch.nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor:
        out = out.detach().requires_grad_()
        captured["h"] = out
        return out

    handle = model.embed.register_forward_hook(hook)
    inputs = torch.as_tensor(random_classes(length))[None]
    frames = None
    if cfg.mel is not None:
        frames = torch.as_tensor(random_frames(length // cfg.mel.hop, cfg.mel.n_mels)).T[None].requires_grad_()
    speaker = torch.tensor([1]) if cfg.speakers else None
    logits = model(inputs, None if frames is None else pad_frames(frames, cfg), speaker)
    logits[0, :, t].sum().backward()
    handle.remove()
    grad_h = captured["h"].grad
    assert grad_h is not None
    return grad_h[0].abs().sum(dim=1), None if frames is None else frames.grad[0].abs().sum(dim=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_depends_only_on_past_inputs_and_declared_lookahead(name: str) -> None:
    model = tiny_model(name)
    cfg = model.cfg
    hop = cfg.mel.hop if cfg.mel is not None else 1
    length = -(-4 * receptive_field(cfg) // hop) * hop  # whole frames
    t = 2 * receptive_field(cfg) + 3
    grad_inputs, grad_frames = _inputs_and_grads(model, t, length)
    # position t reads the inputs at t - receptive_field + 1 .. t (input t is the previous sample)
    assert torch.all(grad_inputs[t + 1 :] == 0)
    assert torch.all(grad_inputs[: t - receptive_field(cfg) + 1] == 0)
    assert grad_inputs[t] > 0 and grad_inputs[t - receptive_field(cfg) + 1] > 0
    if grad_frames is not None:
        assert cfg.mel is not None
        last = t // cfg.mel.hop + lookahead_frames(cfg)
        assert torch.all(grad_frames[last + 1 :] == 0)
        assert grad_frames[last] > 0  # the declared lookahead is exact, not just an upper bound


def test_receptive_field_and_context_are_functions_of_config() -> None:
    cfg = WaveNetConfig(max_dilation=512, dilation_cycles=2)
    assert receptive_field(cfg) == 2 * 1023 + 1
    assert frame_context(cfg) == (1, 2)
    assert lookahead_frames(cfg) == 2


def test_mulaw_round_trip() -> None:
    classes = np.arange(256)
    assert np.array_equal(mulaw.encode(mulaw.decode(classes)), classes)
    x = np.linspace(-1, 1, 10001)
    err = np.abs(mulaw.decode(mulaw.encode(x)) - x)
    step = np.abs(np.diff(mulaw.decode(classes))).max()
    assert err.max() <= 0.51 * step  # rounding happens in the companded domain
    assert err[np.abs(x) < 0.01].max() < 3e-4  # fine steps near zero: the point of μ-law
    assert mulaw.encode(np.array([0.0]))[0] == mulaw.SILENCE
    for classes in (3, 64, 256, 1024):
        assert mulaw.encode(np.array([0.0]), classes)[0] == mulaw.silence(classes)


def test_log_mel_frames_follow_the_declared_grid() -> None:
    spec = MelSpec()
    rng = np.random.default_rng(0)
    wav = rng.normal(scale=0.1, size=spec.hop * 50 + 37)
    frames = log_mel(wav, spec)
    assert frames.shape == (n_frames(len(wav), spec), spec.n_mels) == (50, 80)
    # frame i only sees samples within win/2 of its centre i*hop + hop/2
    changed = wav.copy()
    centre = 20 * spec.hop + spec.hop // 2
    changed[centre + spec.win // 2 + 1 :] = 0
    assert np.array_equal(log_mel(changed, spec)[20], frames[20])
    # a tone lands in the mel band of its frequency
    t = np.arange(spec.sample_rate) / spec.sample_rate
    tone = log_mel(0.5 * np.sin(2 * np.pi * 1000 * t), spec)
    low_tone = log_mel(0.5 * np.sin(2 * np.pi * 300 * t), spec)
    assert tone[10].argmax() > low_tone[10].argmax()


def test_checkpoint_round_trip(tmp_path: os.PathLike[str]) -> None:
    model = tiny_model("both")
    path = os.path.join(tmp_path, "m.pt")
    save_checkpoint(path, model)
    loaded = load_checkpoint(path)
    assert loaded.cfg == model.cfg
    inputs = torch.as_tensor(random_classes(64))[None]
    frames = pad_frames(torch.as_tensor(random_frames(16, 8)).T[None], model.cfg)
    speaker = torch.tensor([1])
    assert torch.equal(model(inputs, frames, speaker), loaded(inputs, frames, speaker))


def test_frames_are_standardised_with_the_models_statistics() -> None:
    model = tiny_model("both")
    assert model.frame_net is not None
    mean, std = model.frame_net.mean.clone(), model.frame_net.std.clone()
    frames = pad_frames(torch.as_tensor(random_frames(16, 8)).T[None], model.cfg)
    inputs, speaker = torch.as_tensor(random_classes(64))[None], torch.tensor([1])
    with_stats = model(inputs, frames, speaker)
    set_frame_stats(model, np.zeros(8), np.ones(8))
    by_hand = model(inputs, (frames - mean[:, None]) / std[:, None], speaker)
    torch.testing.assert_close(with_stats, by_hand, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(with_stats, model(inputs, frames, speaker))  # the statistics matter


def test_frame_stats_are_per_band_mean_and_floored_std() -> None:
    frames = np.stack([np.arange(6.0), np.full(6, 3.0)], axis=1)  # band 0 varies, band 1 is constant
    mean, std = frame_stats(frames.astype(np.float32))
    np.testing.assert_allclose(mean, [2.5, 3.0])
    np.testing.assert_allclose(std, [np.std(np.arange(6.0)), 1e-3])


def test_a_checkpoint_from_before_frame_statistics_loads_with_identity_ones(tmp_path: os.PathLike[str]) -> None:
    model = tiny_model("both")
    set_frame_stats(model, np.zeros(8), np.ones(8))
    path = os.path.join(tmp_path, "old.pt")
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    del payload["model"]["frame_net.mean"], payload["model"]["frame_net.std"]
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    inputs = torch.as_tensor(random_classes(64))[None]
    frames = pad_frames(torch.as_tensor(random_frames(16, 8)).T[None], model.cfg)
    assert torch.equal(model(inputs, frames, torch.tensor([1])), loaded(inputs, frames, torch.tensor([1])))


def test_missing_truncated_mismatched_and_hostile_checkpoints(tmp_path: os.PathLike[str]) -> None:
    model = tiny_model("mel")
    path = os.path.join(tmp_path, "m.pt")
    save_checkpoint(path, model)

    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(os.path.join(tmp_path, "nope.pt"))

    truncated = os.path.join(tmp_path, "truncated.pt")
    with open(path, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read()[:1000])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(truncated)

    payload = torch.load(path, weights_only=True)
    payload["config"]["residual_channels"] = 16
    mismatched = os.path.join(tmp_path, "mismatched.pt")
    torch.save(payload, mismatched)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(mismatched)

    payload = torch.load(path, weights_only=True)
    del payload["model"]["head.3.bias"]
    missing = os.path.join(tmp_path, "missing.pt")
    torch.save(payload, missing)
    with pytest.raises(CheckpointError, match="head.3.bias"):
        load_checkpoint(missing)

    hostile = os.path.join(tmp_path, "hostile.pt")
    marker = os.path.join(tmp_path, "pwned")

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    with open(hostile, "wb") as f:
        pickle.dump({"format": "wavenet-stream/1", "x": Exploit()}, f)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(hostile)
    assert not os.path.exists(marker)
