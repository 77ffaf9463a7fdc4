"""The compiled generator (models/generate/compiled.py) against the reference queue generator: logits, samples,
batching."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import models.generate.compiled as fast
from models.generate.compiled import FastGenerator, engine_module, make_generator
from models.generate.reference import Generator, StreamConfig, sample, uniforms
from models.wavenet import WaveNet, receptive_field
from tests.tiny import generate_in_changing_batch, random_classes, random_frames, tiny_model
from wavenet.mulaw import SILENCE

TOLERANCE = 1e-4  # fp32, as the reference generator against the parallel model
BF16_TOLERANCE = 0.1  # bf16 weights: max |logit diff| as a fraction of the logits' standard deviation

VARIANTS = [v for v in fast.VARIANTS if engine_module(v) is not None]
pytestmark = pytest.mark.skipif(
    not VARIANTS, reason="compiled generator not built (models.generate._engine_*: `make setup`, a C++17 compiler)"
)


@pytest.fixture(params=VARIANTS or ["none"])
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def stream_configs(model: WaveNet, features: bool) -> list[StreamConfig]:
    """Three streams: different speakers, seeds and temperatures (one greedy)."""
    speakers = max(1, model.cfg.speakers)
    return [
        StreamConfig(speaker=i % speakers, seed=10 + i, temperature=t, features=features)
        for i, t in enumerate((1.0, 0.7, 0.0))
    ]


def open_all(gen: Generator, configs: list[StreamConfig], frames: np.ndarray | None,
             given_pitch: np.ndarray | None = None) -> list[int]:
    sids = []
    for config in configs:
        sid = gen.open(config)
        if config.features:
            assert frames is not None
            gen.push_frames(sid, frames, given_pitch)
            gen.end_frames(sid)
        sids.append(sid)
    return sids


def teacher_forced(gen: Generator, configs: list[StreamConfig], frames: np.ndarray | None, n: int,
                   batched: bool) -> np.ndarray:
    """(n, streams, classes) logits teacher-forced on random classes, stepping the streams together or one by one."""
    sids = open_all(gen, configs, frames)
    inputs = np.stack([np.concatenate([[SILENCE], random_classes(n, seed=i)[:-1]]) for i in range(len(sids))], 1)
    out = []
    for t in range(n):
        if batched:
            out.append(gen.step_logits(sids, inputs[t]))
        else:
            out.append(np.concatenate([gen.step_logits([sid], inputs[t, i : i + 1]) for i, sid in enumerate(sids)]))
    return np.array(out)


def frames_for(model: WaveNet, features: bool, n: int) -> np.ndarray | None:
    if not features or model.cfg.mel is None:
        return None
    return random_frames(n // model.cfg.mel.hop + 2, model.cfg.mel.n_mels)


@pytest.mark.parametrize("features", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_fp32_logits_equal_reference(model: WaveNet, variant: str, features: bool, batched: bool) -> None:
    if features and model.cfg.mel is None:
        pytest.skip("model takes no features")
    n = 2 * receptive_field(model.cfg) + 7  # past the receptive field: the queues wrap
    frames = frames_for(model, features, n)
    configs = stream_configs(model, features)
    expected = teacher_forced(Generator(model), configs, frames, n, batched=True)
    got = teacher_forced(FastGenerator(model, "fp32", variant=variant), configs, frames, n, batched)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("features", [True, False])
def test_bf16_logits_within_stated_tolerance(model: WaveNet, variant: str, features: bool) -> None:
    if features and model.cfg.mel is None:
        pytest.skip("model takes no features")
    n = receptive_field(model.cfg) + 40
    frames = frames_for(model, features, n)
    configs = stream_configs(model, features)
    expected = teacher_forced(Generator(model), configs, frames, n, batched=True)
    got = teacher_forced(FastGenerator(model, "bf16", variant=variant), configs, frames, n, batched=True)
    err = np.abs(got - expected).max()
    assert err <= BF16_TOLERANCE * expected.std(), (err, expected.std())
    assert err > 0  # it really is bf16


def generate_all(gen: Generator, sids: list[int], chunk: int) -> dict[int, np.ndarray]:
    parts: dict[int, list[np.ndarray]] = {sid: [] for sid in sids}
    while not all(gen.done(sid) for sid in sids):
        out = gen.generate(chunk)
        for sid in sids:
            parts[sid].append(out.get(sid, np.zeros(0, np.int64)))
    return {sid: np.concatenate(p) for sid, p in parts.items()}


@pytest.mark.parametrize("features", [True, False])
def test_fp32_samples_equal_reference(model: WaveNet, variant: str, features: bool) -> None:
    if features and model.cfg.mel is None:
        pytest.skip("model takes no features")
    n = 3 * receptive_field(model.cfg)
    frames = frames_for(model, features, n)
    lengths = (n, n // 2, n // 3)  # streams stop at different points of a chunk
    configs = [
        StreamConfig(c.speaker, c.temperature, c.seed, length, c.features)
        for c, length in zip(stream_configs(model, features), lengths)
    ]
    results = []
    for gen in (Generator(model), FastGenerator(model, "fp32", threads=2, variant=variant)):
        sids = open_all(gen, configs, frames)
        results.append(generate_all(gen, sids, chunk=29))
    for config, a, b in zip(configs, results[0].values(), results[1].values()):
        assert len(a) == config.length and len(b) == config.length
        # every pick of both runs is the reference's teacher-forced on that run's own history: where a rounding
        # flip parts the two (a != b from there on), the comparison goes on rather than ending
        assert off_the_reference(model, config, frames, b) == []
        assert off_the_reference(model, config, frames, a) == []  # the reference's own chunked run, too


def off_the_reference(model: WaveNet, config: StreamConfig, frames: np.ndarray | None,
                      history: np.ndarray, prime: np.ndarray | None = None,
                      given_pitch: np.ndarray | None = None) -> list[int]:
    """The steps at which one stream's classes are not what the reference generator, teacher-forced on those
    classes, picks with the stream's seed and temperature, other than by float rounding: a neighbouring class,
    with the stream's draw within 3e-5 of the CDF boundary between the two (fp32 logits agree to 1e-5 here at
    worst; the reference alone can land either side, its products rounding differently at another batch size).
    A stream primed from `prime` is checked on its generated classes, the reference stepped through the prime."""
    gen = Generator(model)
    (sid,) = open_all(gen, [config], frames, given_pitch)
    before = np.zeros(0, np.int64) if prime is None else prime
    full = np.concatenate([before, history])
    inputs = np.concatenate([[SILENCE], full[:-1]])
    temperature = np.array([config.temperature])
    off = []
    for t in range(len(full)):
        logits = gen.step_logits([sid], inputs[t : t + 1])
        if t < len(before):
            continue
        u = uniforms(np.array([config.seed], np.uint64), np.array([t], np.uint64))
        pick, got = int(sample(logits, temperature, u)[0]), int(full[t])
        if pick != got and not boundary_flip(logits[0], config.temperature, float(u[0]), pick, got):
            off.append(t)
    return off


def boundary_flip(logits: np.ndarray, temperature: float, u: float, a: int, b: int) -> bool:
    """Whether classes a and b are neighbours and the draw u lies within 3e-5 of the CDF boundary between them."""
    low, high = sorted((a, b))
    if high - low != 1 or temperature <= 0:
        return False
    scaled = logits.astype(np.float64) / temperature
    cdf = np.cumsum(np.exp(scaled - scaled.max()))
    return bool(abs(cdf[low] / cdf[-1] - u) < 3e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_logits_inside_a_chunk_equal_reference_on_the_same_samples(variant: str, precision: str) -> None:
    """A chunk's logits (features streams' biases interpolated by the engine, per step) against the reference
    teacher-forced on the samples the chunk drew."""
    model = tiny_model("both")
    cfg = model.cfg
    assert cfg.mel is not None
    frames = random_frames(40, cfg.mel.n_mels)
    configs = [StreamConfig(speaker=1, features=True, seed=7, temperature=0.8), StreamConfig(speaker=0, seed=8)]
    gen = FastGenerator(model, precision, threads=2, variant=variant)  # type: ignore[arg-type]
    sids = open_all(gen, configs, frames)
    gen.record_logits = []
    out = gen.generate(100)
    got = gen.record_logits[0]  # rows: streams longest first (both run 100 steps: in order opened)
    ref = Generator(model)
    ref_sids = open_all(ref, configs, frames)
    inputs = np.stack([np.concatenate([[SILENCE], out[sid][:-1]]) for sid in sids], 1)
    expected = np.stack([ref.step_logits(ref_sids, inputs[t]) for t in range(100)], 1)
    if precision == "fp32":
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    else:
        assert np.abs(got - expected).max() <= BF16_TOLERANCE * expected.std()


@pytest.mark.parametrize("name", ["both", "pitch", "lag"])
def test_primed_stream_equals_reference(variant: str, name: str) -> None:
    model = tiny_model(name)
    cfg = model.cfg
    assert cfg.mel is not None
    seed = random_classes(2 * receptive_field(cfg) + 3)
    frames = random_frames(len(seed) // cfg.mel.hop + 40, cfg.mel.n_mels)
    config = StreamConfig(speaker=1, features=True, seed=5, temperature=0.8)
    for gen in (Generator(model), FastGenerator(model, "fp32", variant=variant)):
        sid = gen.open(config, seed_audio=seed)
        gen.push_frames(sid, frames)
        gen.end_frames(sid)
        out = generate_all(gen, [sid], chunk=50)[sid]
        assert len(out) == len(frames) * cfg.mel.hop - len(seed)
        # the prime's parallel pass filled the queues as stepping through the seed would: every pick is the
        # reference's, teacher-forced through the seed and then the stream's own history (a rounding flip between
        # the two generators would part their outputs without either being wrong)
        assert off_the_reference(model, config, frames, out, prime=seed) == []


@pytest.mark.parametrize("name", ["both", "pitch", "lag"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_seeded_stream_is_identical_alone_and_in_a_changing_batch(variant: str, precision: str, name: str) -> None:
    model = tiny_model(name)
    cfg = model.cfg
    assert cfg.mel is not None
    frames = random_frames(60, cfg.mel.n_mels)
    config = StreamConfig(speaker=1, features=True, seed=1234, temperature=0.9)

    def make() -> FastGenerator:
        return FastGenerator(model, precision, threads=2, variant=variant)  # type: ignore[arg-type]

    alone = make()
    sid = alone.open(config)
    alone.push_frames(sid, frames)
    alone.end_frames(sid)
    expected = generate_all(alone, [sid], chunk=97)[sid]  # past a lag model's nearest tap: the engine keeps its inputs
    assert len(expected) == 60 * cfg.mel.hop

    got = generate_in_changing_batch(make(), config, frames, others=11, joins={2: 5, 5: 5})
    assert np.array_equal(got, expected)


def test_the_engines_lag_taps_follow_a_callers_pitch(variant: str) -> None:
    model = tiny_model("lag")
    assert model.cfg.mel is not None
    frames = random_frames(30, model.cfg.mel.n_mels)
    f0 = np.where(np.arange(30) % 8 < 5, 70.0 + 9 * np.arange(30), 0.0)
    given = np.stack([f0, np.full(30, 0.9)], axis=1).astype(np.float32)
    config = StreamConfig(speaker=1, features=True, seed=11, temperature=0.9)
    outs = []
    for pitch_given in (given, None):
        gen = FastGenerator(model, "fp32", variant=variant)
        (sid,) = open_all(gen, [config], frames, pitch_given)
        outs.append(generate_all(gen, [sid], chunk=97)[sid])
    assert off_the_reference(model, config, frames, outs[0], given_pitch=given) == []
    assert not np.array_equal(outs[0], outs[1])


def test_reference_and_fast_share_the_queue_bank(variant: str) -> None:
    """Steps by either path continue each other: the queues are the same tensors, updated in place."""
    model = tiny_model("speaker")
    gen = FastGenerator(model, "fp32", variant=variant)
    ref = Generator(model)
    a, b = gen.open(StreamConfig(speaker=2, seed=1)), ref.open(StreamConfig(speaker=2, seed=1))
    inputs = random_classes(40)
    for t in range(40):
        step = Generator.step_logits if t % 2 else FastGenerator.step_logits
        got = step(gen, [a], inputs[t : t + 1])
        expected = ref.step_logits([b], inputs[t : t + 1])
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_compiled_sampling_equals_sample_and_uniforms(variant: str) -> None:
    module = engine_module(variant)
    assert module is not None
    rng = np.random.default_rng(0)
    for classes in (256, 100, 3):
        logits = (rng.normal(size=(203, classes)) * rng.uniform(0.1, 30, (203, 1))).astype(np.float32)
        logits[:, rng.integers(0, classes, 2)] = logits.max(axis=1, keepdims=True)  # ties for argmax
        temperatures = rng.choice([0.0, -1.0, 1.0, 0.5, 1.7, 1e-3], 203)
        seeds = rng.integers(0, 2**63, 203, dtype=np.uint64)
        positions = rng.integers(0, 2**40, 203, dtype=np.uint64)
        np.testing.assert_array_equal(module.uniforms(seeds, positions), uniforms(seeds, positions))
        expected = sample(logits, temperatures, uniforms(seeds, positions))
        np.testing.assert_array_equal(module.sample_rows(logits, temperatures, seeds, positions), expected)


def test_engine_rejects_bad_arguments(variant: str) -> None:
    gen = FastGenerator(tiny_model("plain"), variant=variant)
    a, b = gen.open(StreamConfig(seed=1)), gen.open(StreamConfig(seed=2))
    states = [gen.streams[a], gen.streams[b]]
    states[1].slot = states[0].slot  # two streams on one slot would race
    bias = gen._chunk_bias(states, [3, 3], 3)
    with pytest.raises(ValueError, match="slots"):
        gen._run_chunk(states, [3, 3], bias, np.zeros(2, np.uint64), np.ones(2))


def test_engine_refuses_a_pitch_lag_history_of_another_length(variant: str) -> None:
    model = tiny_model("lag")
    assert model.cfg.mel is not None
    gen = FastGenerator(model, variant=variant)
    sids = [gen.open(StreamConfig(seed=s, features=True)) for s in (1, 2)]
    for sid in sids:
        gen.push_frames(sid, random_frames(12, model.cfg.mel.n_mels))
        gen._condition(gen.streams[sid], 4 * model.cfg.mel.hop)
    states = [gen.streams[sid] for sid in sids]
    assert states[0].history is not None
    states[0].history = states[0].history[:5]  # short: the engine's ring would not reach the farthest tap
    bias = gen._chunk_bias(states, [3, 3], 3)
    with pytest.raises(ValueError, match="lag_history"):
        gen._run_chunk(states, [3, 3], bias, np.zeros(2, np.uint64), np.ones(2))


def test_make_generator_prefers_the_compiled_path() -> None:
    model = tiny_model("plain")
    assert isinstance(make_generator(model), FastGenerator)
    assert make_generator(model, precision="bf16").info()["precision"] == "bf16"  # type: ignore[attr-defined]
    assert type(make_generator(model, prefer_fast=False)) is Generator


@pytest.mark.parametrize(("cpu", "expected"), [
    ({"avx512", "avx2"}, "avx512"),
    ({"avx2"}, "avx2"),  # most x86 CPUs without AVX-512 (AMD before Zen 4, Intel client cores)
    (set(), "generic"),
])
def test_each_cpu_gets_the_best_variant_it_runs(monkeypatch: pytest.MonkeyPatch, cpu: set[str],
                                                expected: str) -> None:
    if not fast._cpu_runs(expected) or fast._import(expected) is None:  # the real CPU; importing first could fault
        pytest.skip(f"this CPU cannot run the {expected} variant, or it is not built")
    monkeypatch.setattr(fast, "_cpu_runs", lambda variant: variant == "generic" or variant in cpu)
    for simd in fast.SIMD_VARIANTS:
        if simd not in cpu:
            assert engine_module(simd) is None  # never loaded where it would fault
    gen = FastGenerator(tiny_model("plain"))
    assert gen.info()["variant"] == expected
    assert gen.precision == ("fp32" if expected == "generic" else "bf16")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_avx2_and_avx512_variants_compute_the_same_logits(precision: str) -> None:
    """The AVX2 kernels are the AVX-512 ones in 8 lanes: the same fma chains, bf16 widening and exp."""
    if not {"avx512", "avx2"} <= set(VARIANTS):
        pytest.skip("needs a CPU that runs both the avx512 and the avx2 variant")
    model = tiny_model("both")  # 12 residual channels: the partial vectors too
    n = receptive_field(model.cfg) + 40
    frames = frames_for(model, True, n)
    configs = stream_configs(model, True)
    logits = [teacher_forced(FastGenerator(model, precision, variant=v), configs, frames, n,  # type: ignore[arg-type]
                             batched=True) for v in ("avx512", "avx2")]
    np.testing.assert_array_equal(logits[0], logits[1])


def test_without_the_extension_the_reference_runs_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast, "_import", lambda variant: None)
    monkeypatch.setattr(fast, "_warned", False)
    model = tiny_model("plain")
    with pytest.warns(RuntimeWarning, match="not built"):
        gen = make_generator(model)
    assert type(gen) is Generator
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(make_generator(model)) is Generator  # once only
    with pytest.raises(RuntimeError, match="not available"):
        FastGenerator(model)

