"""The queue generator: exact against the parallel model, primed, batched and seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import pitch
from models.generate.reference import Generator, StreamConfig
from models.wavenet import GateBias, WaveNet, WaveNetConfig, pad_frames, pitch_inputs, receptive_field
from tests.tiny import generate_in_changing_batch, random_classes, random_frames, tiny_model
from wavenet.mulaw import SILENCE, silence

TOLERANCE = 1e-4


def parallel_logits(model: WaveNet, classes: np.ndarray, frames: np.ndarray | None, speaker: int) -> np.ndarray:
    """(T, classes) logits of the parallel forward pass, teacher-forced on classes."""
    cfg = model.cfg
    inputs = torch.as_tensor(np.concatenate([[SILENCE], classes[:-1]]))[None]
    padded = None if frames is None else pad_frames(torch.as_tensor(frames).T[None], cfg)
    with torch.no_grad():
        excitation = model.excitation_from_frames(padded, inputs) if padded is not None and pitch_inputs(cfg) else None
        logits = model(inputs, padded, torch.tensor([speaker]) if cfg.speakers else None, None, excitation)
    return logits[0].T.numpy()


def stream_config(model: WaveNet, features: bool, **kwargs: object) -> StreamConfig:
    speaker = 1 if model.cfg.speakers else 0
    return StreamConfig(speaker=speaker, features=features, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("features", [True, False])
def test_teacher_forced_queues_equal_parallel_forward(model: WaveNet, features: bool) -> None:
    cfg = model.cfg
    if features and cfg.mel is None:
        pytest.skip("model takes no features")
    hop = cfg.mel.hop if cfg.mel else 1
    n = (3 * receptive_field(cfg) // hop + 5) * hop  # more steps than the receptive field
    classes = random_classes(n)
    frames = random_frames(n // hop, cfg.mel.n_mels) if features and cfg.mel else None
    expected = parallel_logits(model, classes, frames, stream_config(model, features).speaker)

    gen = Generator(model)
    sid = gen.open(stream_config(model, features))
    got = []
    pushed = 0
    inputs = np.concatenate([[SILENCE], classes[:-1]])
    for t in range(n):
        if frames is not None:  # frames arrive one at a time, only as the generator needs them
            while gen.ready(sid) == 0 and pushed < len(frames):
                gen.push_frames(sid, frames[pushed : pushed + 1])
                pushed += 1
            if gen.ready(sid) == 0:
                gen.end_frames(sid)
        assert gen.ready(sid) > 0
        got.append(gen.step_logits([sid], inputs[t : t + 1])[0])
    np.testing.assert_allclose(np.array(got), expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("classes", [64, 1024])
def test_a_stream_starts_from_the_silence_of_its_models_classes(classes: int) -> None:
    """Greedy output of a model with other than 256 classes is the parallel model's argmax, teacher-forced from that
    model's silence class (with the 8-bit one, 128, a 64-class model fails and a 1,024-class one starts loud)."""
    cfg = tiny_model("speaker").cfg
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**{**cfg.__dict__, "classes": classes})).eval()
    gen = Generator(model)
    sid = gen.open(StreamConfig(speaker=1, temperature=0.0, length=60))
    out = gen.generate(60)[sid]
    inputs = torch.as_tensor(np.concatenate([[silence(classes)], out[:-1]]))[None]
    with torch.no_grad():
        expected = model(inputs, None, torch.tensor([1]))[0].argmax(0).numpy()
    assert np.array_equal(out, expected)


def test_features_are_consumed_only_as_far_as_received_plus_lookahead() -> None:
    model = tiny_model("both")
    cfg = model.cfg
    assert cfg.mel is not None
    gen = Generator(model)
    sid = gen.open(StreamConfig(features=True))
    frames = random_frames(10, cfg.mel.n_mels)
    gen.push_frames(sid, frames[:2])
    assert gen.ready(sid) == 0  # lookahead is 3 frames
    gen.push_frames(sid, frames[2:7])
    assert gen.ready(sid) == (7 - 3) * cfg.mel.hop
    out = gen.generate(1000)
    assert len(out[sid]) == 4 * cfg.mel.hop
    assert gen.ready(sid) == 0 and not gen.done(sid)
    gen.push_frames(sid, frames[7:])
    gen.end_frames(sid)
    assert gen.ready(sid) == 6 * cfg.mel.hop  # end of input flushes the rest
    assert len(gen.generate(1000)[sid]) == 6 * cfg.mel.hop
    assert gen.done(sid)


@pytest.mark.parametrize("name", ["both", "pitch", "lag"])
def test_priming_equals_stepping_through_the_seed(name: str) -> None:
    model = tiny_model(name)
    cfg = model.cfg
    assert cfg.mel is not None
    n_seed = 2 * receptive_field(cfg) + 3 + 600 * (cfg.pitch_lag > 0)  # a lag model's taps: past its history too
    seed = random_classes(n_seed)
    frames = random_frames(n_seed // cfg.mel.hop + 20, cfg.mel.n_mels)
    gen = Generator(model)
    primed = gen.open(StreamConfig(speaker=1, features=True, seed=5), seed_audio=seed)
    stepped = gen.open(StreamConfig(speaker=1, features=True, seed=5))
    for sid in (primed, stepped):
        gen.push_frames(sid, frames)
        gen.end_frames(sid)
    inputs = np.concatenate([[SILENCE], seed[:-1]])
    for t in range(n_seed):
        gen.step_logits([stepped], inputs[t : t + 1])
    gen.streams[stepped].last = int(seed[-1])
    gen.generate(0)  # primes the seeded stream
    a, b = gen.streams[primed], gen.streams[stepped]
    assert a.t == b.t == n_seed
    for queue in gen.queues:
        np.testing.assert_allclose(queue[a.slot].numpy(), queue[b.slot].numpy(), atol=TOLERANCE, rtol=0)
    out = gen.generate(300)
    assert np.array_equal(out[primed], out[stepped])


def generate_all(gen: Generator, sid: int, chunk: int = 37) -> np.ndarray:
    parts = []
    while not gen.done(sid):
        parts.append(gen.generate(chunk).get(sid, np.zeros(0, np.int64)))
    return np.concatenate(parts)


@pytest.mark.parametrize("name", ["both", "pitch", "lag"])
def test_seeded_stream_is_identical_alone_and_in_a_changing_batch(name: str) -> None:
    model = tiny_model(name)
    cfg = model.cfg
    assert cfg.mel is not None
    frames = random_frames(60, cfg.mel.n_mels)
    config = StreamConfig(speaker=1, features=True, seed=1234, temperature=0.9)

    alone = Generator(model)
    sid = alone.open(config)
    alone.push_frames(sid, frames)
    alone.end_frames(sid)
    expected = generate_all(alone, sid)
    assert len(expected) == 60 * cfg.mel.hop

    got = generate_in_changing_batch(Generator(model), config, frames, others=3, joins={2: 1})
    assert np.array_equal(got, expected)


def test_same_seed_same_audio_and_other_seed_other_audio() -> None:
    model = tiny_model("speaker")

    def run(seed: int) -> np.ndarray:
        gen = Generator(model)
        sid = gen.open(StreamConfig(speaker=2, seed=seed, length=500))
        return generate_all(gen, sid)

    assert np.array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_many_streams_grow_the_bank_and_reuse_slots() -> None:
    model = tiny_model("plain")
    gen = Generator(model)
    sids = [gen.open(StreamConfig(seed=i, length=20)) for i in range(10)]
    out = gen.generate(100)
    assert all(len(out[sid]) == 20 for sid in sids) and all(gen.done(sid) for sid in sids)
    for sid in sids:
        gen.close(sid)
    again = gen.open(StreamConfig(seed=3, length=20))
    assert np.array_equal(gen.generate(100)[again], out[sids[3]])  # a reused slot starts clean


def test_ending_frames_that_do_not_reach_past_the_prime_is_an_error_not_a_hang() -> None:
    model = tiny_model("both")
    assert model.cfg.mel is not None
    gen = Generator(model)
    sid = gen.open(StreamConfig(speaker=0, features=True, seed=1), random_classes(3 * model.cfg.mel.hop))
    gen.push_frames(sid, random_frames(3, model.cfg.mel.n_mels))
    with pytest.raises(ValueError, match="prime"):
        gen.end_frames(sid)


def wide_mel_model() -> WaveNet:
    """Few layers but the default model's frame path (80 bands, 64 conditioning channels), where a convolution's
    rounding depends on the length of the input it runs over."""
    torch.manual_seed(0)
    cfg = WaveNetConfig(max_dilation=4, residual_channels=8, gate_channels=8, skip_channels=16, cond_channels=64)
    model = WaveNet(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def teacher_forced(gen: Generator, sid: int, inputs: np.ndarray, frames: np.ndarray, block: int) -> np.ndarray:
    """Logits for inputs, frames pushed `block` at a time whenever the stream has nothing ready."""
    pushed = 0
    got = []
    for cls in inputs:
        while gen.ready(sid) == 0 and pushed < len(frames):
            gen.push_frames(sid, frames[pushed : pushed + block])
            pushed += block
        if gen.ready(sid) == 0:
            gen.end_frames(sid)
        got.append(gen.step_logits([sid], np.array([cls]))[0])
    return np.array(got)


def test_conditioning_bits_do_not_depend_on_how_the_frames_arrive() -> None:
    model = wide_mel_model()
    assert model.cfg.mel is not None
    frames = random_frames(40, model.cfg.mel.n_mels) * 2.6 - 5.7
    inputs = random_classes(40 * model.cfg.mel.hop)
    runs = []
    for block in (1, 7, 40):
        gen = Generator(model)
        runs.append(teacher_forced(gen, gen.open(StreamConfig(features=True)), inputs, frames, block))
    assert np.array_equal(runs[0], runs[1]) and np.array_equal(runs[0], runs[2])


def test_frames_sent_far_ahead_are_kept_raw_until_generation_needs_them() -> None:
    model = tiny_model("both")
    cfg = model.cfg
    assert cfg.mel is not None
    gen = Generator(model)
    sid = gen.open(StreamConfig(speaker=1, features=True, seed=3))
    frames = random_frames(2000, cfg.mel.n_mels)
    for start in range(0, len(frames), 8):
        gen.push_frames(sid, frames[start : start + 8])
    gen.end_frames(sid)
    state = gen.streams[sid]
    assert state.frame_bias is None  # nothing made ahead of generation
    gen.generate(10 * cfg.mel.hop)
    assert state.frame_bias is not None and len(state.frame_bias) <= 10 + 2 * 16  # what ten frames need, in blocks
    assert gen.ready(sid) == 1990 * cfg.mel.hop


def test_a_long_prime_runs_over_its_last_receptive_field_only(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("both")
    cfg = model.cfg
    assert cfg.mel is not None
    lengths = []
    run_layers = model.run_layers

    def spy(inputs: torch.Tensor, bias: GateBias) -> tuple[torch.Tensor, list[torch.Tensor]]:
        lengths.append(inputs.shape[1])
        return run_layers(inputs, bias)

    monkeypatch.setattr(model, "run_layers", spy)
    gen = Generator(model)
    seed = random_classes(50 * receptive_field(cfg))
    sid = gen.open(StreamConfig(speaker=0, features=True), seed_audio=seed)
    gen.push_frames(sid, random_frames(len(seed) // cfg.mel.hop + 5, cfg.mel.n_mels))
    gen.end_frames(sid)
    gen.generate(10)
    assert lengths == [lengths[0]] and lengths[0] < receptive_field(cfg) + cfg.mel.hop


def pitched_audio(gen: Generator, frames: np.ndarray, given: np.ndarray | None, block: int) -> np.ndarray:
    """A seeded stream's classes, its frames (and the caller's pitch, if any) pushed `block` frames at a time."""
    sid = gen.open(StreamConfig(speaker=1, features=True, seed=7, temperature=0.9))
    for i in range(0, len(frames), block):
        gen.push_frames(sid, frames[i : i + block], None if given is None else given[i : i + block])
    gen.end_frames(sid)
    return generate_all(gen, sid)


@pytest.mark.parametrize("name", ["pitch", "lag"])
def test_a_callers_pitch_is_what_the_stream_follows(name: str) -> None:
    model = tiny_model(name)
    assert model.cfg.mel is not None
    frames = random_frames(40, model.cfg.mel.n_mels)
    given = np.stack([np.where(np.arange(40) % 10 < 6, 90.0 + 5 * np.arange(40), 0.0),
                      np.full(40, np.nan)], axis=1).astype(np.float32)
    given[5, 1] = 0.4
    gen = Generator(model)
    sid = gen.open(StreamConfig(speaker=1, features=True))
    gen.push_frames(sid, frames[:20], given[:20])
    gen.push_frames(sid, frames[20:])  # the rest without: predicted
    gen.end_frames(sid)
    gen._condition(gen.streams[sid], 40 * model.cfg.mel.hop)  # the pitch rows of every frame, made at once
    rows = gen.streams[sid].pitch
    assert rows is not None
    held = pitch.hold_unvoiced(given[:20, 0].astype(np.float64))
    assert np.array_equal(rows[:20, 0], held)  # the caller's F0, unvoiced frames holding the last voiced one
    assert rows[5, 1] == np.float32(0.4) and np.all(rows[:20, 1][given[:20, 0] == 0] == 0)
    alone = Generator(model)
    other = alone.open(StreamConfig(speaker=1, features=True))
    alone.push_frames(other, frames)
    alone.end_frames(other)
    alone._condition(alone.streams[other], 40 * model.cfg.mel.hop)
    predicted = alone.streams[other].pitch
    assert predicted is not None
    assert np.array_equal(rows[20:, :2], predicted[20:, :2])  # frames sent without: the model's own prediction
    assert not np.array_equal(rows[:20, :2], predicted[:20, :2])

    one_block = pitched_audio(Generator(model), frames, given, 40)
    assert np.array_equal(pitched_audio(Generator(model), frames, given, 3), one_block)  # however it arrives
    assert not np.array_equal(pitched_audio(Generator(model), frames, None, 40), one_block)
    with pytest.raises(ValueError, match="given pitch"):
        gen.push_frames(gen.open(StreamConfig(features=True)), frames[:4], given[:3])
    plain = Generator(tiny_model("both"))
    with pytest.raises(ValueError, match="no pitch input"):
        plain.push_frames(plain.open(StreamConfig(features=True)), random_frames(4, 8), given[:4])
