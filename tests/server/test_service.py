"""End to end over a real loopback socket: the contract, batching, admission, cancellation and bad input."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.settings import DEFAULT_CHUNK_SECONDS, Limits, first_chunk_samples
from tests.serving import LIMITS, MAX_STREAMS, RunningServer
from tests.tiny import TINY_MEL, random_frames
from wavenet.codec import InvalidField, decode_audio
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

RATE = TINY_MEL.sample_rate
HOP = TINY_MEL.hop
MELS = TINY_MEL.n_mels


def frames_msg(frames: np.ndarray) -> pb.FeatureFrames:
    return pb.FeatureFrames(values=frames.ravel().tolist(), num_frames=len(frames))


def collect(responses: Iterator[pb.AudioChunk]) -> tuple[list[pb.AudioChunk], np.ndarray]:
    chunks = list(responses)
    audio = [decode_audio(c.audio, c.encoding, "audio") for c in chunks]
    return chunks, np.concatenate(audio)


def test_list_models_describes_the_model(stub: pb_grpc.WaveNetStub) -> None:
    (info,) = stub.ListModels(pb.ListModelsRequest()).models
    assert info.name == "tiny" and info.sample_rate == RATE and info.classes == 256
    assert list(info.speakers) == ["alice", "bob"] and info.free_running
    assert info.features.channels == MELS and info.features.hop == HOP and info.features.lookahead_frames == 3
    assert "ln(" in info.features.description and info.receptive_field > 1


@pytest.mark.parametrize("encoding, width", [(pb.PCM16, 2), (pb.FLOAT32, 4), (pb.MULAW8, 1),
                                             (pb.AUDIO_ENCODING_UNSPECIFIED, 2)])
def test_generate_streams_exact_length_in_each_encoding(stub: pb_grpc.WaveNetStub, encoding: int, width: int) -> None:
    request = pb.GenerateRequest(seconds=0.5, speaker=1, seed=3, encoding=encoding, chunk_samples=96)
    chunks, audio = collect(stub.Generate(request))
    assert len(audio) == 800
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert [c.first_sample for c in chunks] == list(np.cumsum([0] + [c.num_samples for c in chunks[:-1]]))
    assert all(len(c.audio) == c.num_samples * width for c in chunks)
    first = first_chunk_samples(RATE)  # then each chunk up to twice the one before, up to the 96 asked for
    assert [c.num_samples for c in chunks[:-1]] == chunk_plan(800, 96, first)
    summary = chunks[-1].summary
    assert chunks[-1].HasField("summary") and not any(c.HasField("summary") for c in chunks[:-1])
    assert summary.samples == 800 and summary.seed == 3 and summary.real_time_factor > 0
    assert np.all(np.abs(audio) <= 1.0) and np.std(audio) > 0


def chunk_plan(total: int, chunk: int, first: int) -> list[int]:
    """The AudioChunk sizes of `total` samples made without a pause: the proto's rule."""
    sizes, size = [], min(first, chunk)
    while sum(sizes) < total:
        sizes.append(min(size, total - sum(sizes)))
        size = min(2 * size, chunk)
    return sizes


@pytest.mark.parametrize("chunk", [None, 40, 333])
def test_the_audio_is_the_same_whatever_the_chunking(stub: pb_grpc.WaveNetStub, chunk: int | None) -> None:
    request = pb.GenerateRequest(samples=900, seed=5, encoding=pb.FLOAT32, chunk_samples=chunk or 0)
    chunks, audio = collect(stub.Generate(request))
    assert [c.num_samples for c in chunks[:-1]] == chunk_plan(900, chunk or 160, first_chunk_samples(RATE))
    one_chunk = pb.GenerateRequest(samples=900, seed=5, encoding=pb.FLOAT32, chunk_samples=900)
    assert np.array_equal(audio, collect(stub.Generate(one_chunk))[1])


def test_same_seed_same_audio_alone_and_beside_four_others(stub: pb_grpc.WaveNetStub) -> None:
    request = pb.GenerateRequest(samples=1200, speaker=0, seed=42, temperature=0.8, encoding=pb.FLOAT32)
    alone = collect(stub.Generate(request))[1]

    def other(seed: int) -> np.ndarray:
        return collect(stub.Generate(pb.GenerateRequest(samples=700 + 150 * seed, seed=seed)))[1]

    with ThreadPoolExecutor(5) as pool:
        others = [pool.submit(other, s) for s in range(4)]
        busy = pool.submit(lambda: collect(stub.Generate(request))[1])
        assert all(len(f.result()) == 700 + 150 * s for s, f in enumerate(others))
        assert np.array_equal(busy.result(), alone)
    again = pb.GenerateRequest(samples=1200, speaker=0, seed=43, temperature=0.8, encoding=pb.FLOAT32)
    assert not np.array_equal(collect(stub.Generate(again))[1], alone)


def test_unseeded_requests_report_their_seed_and_replay_with_it(stub: pb_grpc.WaveNetStub) -> None:
    chunks, audio = collect(stub.Generate(pb.GenerateRequest(samples=300, encoding=pb.FLOAT32)))
    replay = pb.GenerateRequest(samples=300, encoding=pb.FLOAT32, seed=chunks[-1].summary.seed)
    assert np.array_equal(collect(stub.Generate(replay))[1], audio)


def test_synthesize_streams_audio_before_the_input_ends(stub: pb_grpc.WaveNetStub) -> None:
    frames = random_frames(200, MELS)
    first_audio = threading.Event()
    sent = [0]  # frames handed to gRPC so far

    def requests() -> Iterator[pb.SynthesizeRequest]:
        yield pb.SynthesizeRequest(config=pb.GenerateRequest(seed=9, encoding=pb.FLOAT32, chunk_samples=16))
        for i in range(0, len(frames), 10):
            sent[0] = i + 10
            yield pb.SynthesizeRequest(frames=frames_msg(frames[i : i + 10]))
            if i == 50:  # hold the rest back until audio has come
                assert first_audio.wait(30), "no audio before the end of input"
        yield pb.SynthesizeRequest(end=pb.EndOfInput())

    chunks = []
    sent_at_first_audio = None
    for chunk in stub.Synthesize(requests()):
        if chunk.num_samples and sent_at_first_audio is None:
            sent_at_first_audio = sent[0]
            first_audio.set()
        chunks.append(chunk)
    audio = np.concatenate([decode_audio(c.audio, c.encoding, "audio") for c in chunks])
    assert len(audio) == len(frames) * HOP
    assert sent_at_first_audio is not None and sent_at_first_audio < len(frames)

    whole = pb.GenerateRequest(seed=9, encoding=pb.FLOAT32, features=frames_msg(frames))
    assert np.array_equal(collect(stub.Generate(whole))[1], audio)  # live and whole give the same audio


def test_a_live_feed_gets_all_the_audio_its_frames_allow_without_waiting_for_a_full_chunk(
        stub: pb_grpc.WaveNetStub) -> None:
    from models.wavenet import lookahead_frames
    from tests.tiny import CONFIGS

    frames = random_frames(40, MELS)
    first = 8  # frames sent before the client waits for audio: less audio than one default-sized chunk
    audible = (first - lookahead_frames(CONFIGS["both"])) * HOP
    default_chunk = round(DEFAULT_CHUNK_SECONDS * TINY_MEL.sample_rate)
    assert 0 < audible < default_chunk
    heard = threading.Event()

    def requests() -> Iterator[pb.SynthesizeRequest]:
        yield pb.SynthesizeRequest(config=pb.GenerateRequest(seed=3, encoding=pb.FLOAT32))
        yield pb.SynthesizeRequest(frames=frames_msg(frames[:first]))
        assert heard.wait(30), "the server held back the audio of the frames it had"
        yield pb.SynthesizeRequest(frames=frames_msg(frames[first:]))

    chunks: list[pb.AudioChunk] = []
    for chunk in stub.Synthesize(requests(), timeout=60):
        chunks.append(chunk)
        if sum(c.num_samples for c in chunks) >= audible:
            heard.set()  # all the audio of the first frames arrived before any more were sent
    sizes = [c.num_samples for c in chunks]
    assert sum(sizes[:2]) == audible and sizes[0] == first_chunk_samples(RATE)  # the first chunk, then the flush
    audio = np.concatenate([decode_audio(c.audio, c.encoding, "audio") for c in chunks])
    whole = pb.GenerateRequest(seed=3, encoding=pb.FLOAT32, features=frames_msg(frames))
    assert np.array_equal(collect(stub.Generate(whole))[1], audio)  # shorter chunks, the same audio


def held_stream(stub: pb_grpc.WaveNetStub, release: threading.Event, **kwargs: object) -> grpc.Future:
    """A Synthesize that holds its slot: a config, then no frames until `release` is set."""

    def requests() -> Iterator[pb.SynthesizeRequest]:
        yield pb.SynthesizeRequest(config=pb.GenerateRequest(seed=1))
        release.wait(60)

    return stub.Synthesize(requests(), **kwargs)


def wait_for(predicate: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_capacity_cancellation_and_deadlines_free_slots(server: RunningServer, stub: pb_grpc.WaveNetStub) -> None:
    def active() -> float | None:
        return server.metrics.registry.get_sample_value("wavenet_active_streams", {"model": "tiny"})

    release = threading.Event()
    wait_for(lambda: active() == 0)
    calls = [held_stream(stub, release) for _ in range(MAX_STREAMS)]
    wait_for(lambda: active() == MAX_STREAMS)  # all admitted
    with pytest.raises(grpc.RpcError) as refused:
        next(held_stream(stub, release))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    calls[0].cancel()
    wait_for(lambda: active() == MAX_STREAMS - 1)
    with pytest.raises(grpc.RpcError) as late:
        next(held_stream(stub, release, timeout=0.5))  # admitted into the freed slot, then runs out of time
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: active() == MAX_STREAMS - 1)
    for call in calls[1:]:
        call.cancel()
    wait_for(lambda: active() == 0)
    release.set()
    assert len(collect(stub.Generate(pb.GenerateRequest(samples=100)))[1]) == 100


GOOD_FRAMES = random_frames(20, MELS)
BIG = pb.FeatureFrames(values=[0.0] * (MELS * 9000), num_frames=9000)  # over the 256 KiB message limit

GENERATE_CASES = [
    ("no length", pb.GenerateRequest(), grpc.StatusCode.INVALID_ARGUMENT, "length"),
    ("negative seconds", pb.GenerateRequest(seconds=-1), grpc.StatusCode.INVALID_ARGUMENT, "seconds"),
    ("zero samples", pb.GenerateRequest(samples=0), grpc.StatusCode.INVALID_ARGUMENT, "samples"),
    ("NaN seconds", pb.GenerateRequest(seconds=float("nan")), grpc.StatusCode.INVALID_ARGUMENT, "seconds"),
    ("huge seconds", pb.GenerateRequest(seconds=1e9), grpc.StatusCode.INVALID_ARGUMENT, "seconds"),
    ("huge samples", pb.GenerateRequest(samples=2**62), grpc.StatusCode.INVALID_ARGUMENT, "samples"),
    ("unknown speaker", pb.GenerateRequest(seconds=1, speaker=7), grpc.StatusCode.INVALID_ARGUMENT, "speaker"),
    ("unknown model", pb.GenerateRequest(seconds=1, model="nope"), grpc.StatusCode.NOT_FOUND, "model"),
    ("bad encoding", pb.GenerateRequest(seconds=1, encoding=17), grpc.StatusCode.INVALID_ARGUMENT, "encoding"),
    ("negative temperature", pb.GenerateRequest(seconds=1, temperature=-0.5), grpc.StatusCode.INVALID_ARGUMENT,
     "temperature"),
    ("inf temperature", pb.GenerateRequest(seconds=1, temperature=float("inf")), grpc.StatusCode.INVALID_ARGUMENT,
     "temperature"),
    ("huge chunk", pb.GenerateRequest(seconds=1, chunk_samples=10**8), grpc.StatusCode.INVALID_ARGUMENT,
     "chunk_samples"),
    ("one-sample chunks", pb.GenerateRequest(seconds=1, chunk_samples=1), grpc.StatusCode.INVALID_ARGUMENT,
     "chunk_samples"),
    ("wrong feature size", pb.GenerateRequest(features=pb.FeatureFrames(values=[1.0] * 10, num_frames=2)),
     grpc.StatusCode.INVALID_ARGUMENT, "features.values"),
    ("NaN features", pb.GenerateRequest(features=pb.FeatureFrames(values=[float("nan")] * MELS, num_frames=1)),
     grpc.StatusCode.INVALID_ARGUMENT, "features.values"),
    ("no frames", pb.GenerateRequest(features=pb.FeatureFrames(values=[], num_frames=0)),
     grpc.StatusCode.INVALID_ARGUMENT, "features.num_frames"),
    ("odd PCM16 prime", pb.GenerateRequest(seconds=1, prime=pb.Audio(encoding=pb.PCM16, data=b"\x00\x01\x02")),
     grpc.StatusCode.INVALID_ARGUMENT, "prime.data"),
    ("NaN FLOAT32 prime", pb.GenerateRequest(seconds=1, prime=pb.Audio(
        encoding=pb.FLOAT32, data=np.array([np.nan], "<f4").tobytes())), grpc.StatusCode.INVALID_ARGUMENT, "prime"),
    ("oversized message", pb.GenerateRequest(features=BIG), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
]


@pytest.mark.parametrize("name, request_, code, field", GENERATE_CASES, ids=[c[0] for c in GENERATE_CASES])
def test_bad_generate_requests_get_the_right_code(stub: pb_grpc.WaveNetStub, name: str, request_: pb.GenerateRequest,
                                                  code: grpc.StatusCode, field: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Generate(request_, timeout=20))
    assert error.value.code() == code, error.value.details()
    assert (error.value.details() or "").startswith(field)  # "field: problem"
    assert len(collect(stub.Generate(pb.GenerateRequest(samples=64)))[1]) == 64  # still serving


def config_msg(**kwargs: object) -> pb.SynthesizeRequest:
    return pb.SynthesizeRequest(config=pb.GenerateRequest(**kwargs))  # type: ignore[arg-type]


def frames_req(frames: np.ndarray) -> pb.SynthesizeRequest:
    return pb.SynthesizeRequest(frames=frames_msg(frames))


END = pb.SynthesizeRequest(end=pb.EndOfInput())
SYNTHESIZE_CASES = [
    ("frames before the config", [frames_req(GOOD_FRAMES)], "config"),
    ("empty stream", [], "config"),
    ("a second config", [config_msg(), frames_req(GOOD_FRAMES), config_msg(), END], "config"),
    ("wrong frame width", [config_msg(), pb.SynthesizeRequest(frames=pb.FeatureFrames(values=[1.0] * 7,
                                                                                     num_frames=1)), END],
     "frames.values"),
    ("inf in frames", [config_msg(), pb.SynthesizeRequest(frames=pb.FeatureFrames(values=[float("inf")] * MELS,
                                                                                   num_frames=1)), END],
     "frames.values"),
    # enough audio before the end that the server reads the stray message before it could have finished
    ("frames after the end", [config_msg(), frames_req(random_frames(1000, MELS)), END, frames_req(GOOD_FRAMES)],
     "frames"),
    ("features in the config", [config_msg(features=frames_msg(GOOD_FRAMES)), END], "config.features"),
    ("unknown speaker in config", [config_msg(speaker=9), END], "config.speaker"),
    ("empty message", [config_msg(), pb.SynthesizeRequest(), END], "kind"),
    ("prime not shorter than the frames", [config_msg(prime=pb.Audio(encoding=pb.FLOAT32, data=np.zeros(
        len(GOOD_FRAMES) * HOP, "<f4").tobytes())), frames_req(GOOD_FRAMES), END], "config.prime"),
    ("prime longer than frames then half-close", [config_msg(prime=pb.Audio(encoding=pb.FLOAT32, data=np.zeros(
        len(GOOD_FRAMES) * HOP + 5, "<f4").tobytes())), frames_req(GOOD_FRAMES)], "config.prime"),
]


@pytest.mark.parametrize("name, messages, field", SYNTHESIZE_CASES, ids=[c[0] for c in SYNTHESIZE_CASES])
def test_bad_synthesize_streams_get_invalid_argument(server: RunningServer, stub: pb_grpc.WaveNetStub, name: str,
                                                     messages: list[pb.SynthesizeRequest], field: str) -> None:
    def refused() -> float:
        labels = {"method": "Synthesize", "code": "INVALID_ARGUMENT"}
        return server.metrics.registry.get_sample_value("wavenet_requests_total", labels) or 0.0

    before = refused()
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Synthesize(iter(messages), timeout=20))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert (error.value.details() or "").startswith(field)  # "field: problem"
    wait_for(lambda: refused() == before + 1)  # counted (the handler finishes just after the client hears)
    assert len(collect(stub.Generate(pb.GenerateRequest(samples=64)))[1]) == 64  # still serving


GARBLED = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, a length past the end: no protobuf message parses from it


def raw(channel: grpc.Channel, method: str, shape: str) -> grpc.UnaryStreamMultiCallable:
    """A call of the service's method that sends and receives bytes as they are, to send ones that do not parse."""
    return getattr(channel, shape)(f"/wavenet.v1.WaveNet/{method}", request_serializer=bytes,
                                   response_deserializer=bytes)


@pytest.mark.parametrize("method, shape, messages, problem", [
    ("ListModels", "unary_unary", GARBLED, "request: not a valid wavenet.v1.ListModelsRequest message"),
    ("Generate", "unary_stream", GARBLED, "request: not a valid wavenet.v1.GenerateRequest message"),
    ("Synthesize", "stream_stream", [GARBLED], "request: message 1: not a valid wavenet.v1.SynthesizeRequest"),
    ("Synthesize", "stream_stream", [config_msg().SerializeToString(), frames_req(GOOD_FRAMES).SerializeToString(),
                                     GARBLED], "request: message 3: not a valid wavenet.v1.SynthesizeRequest"),
])
def test_a_message_that_does_not_parse_gets_invalid_argument(server: RunningServer, method: str, shape: str,
                                                             messages: bytes | list[bytes], problem: str) -> None:
    """Not UNKNOWN or INTERNAL with a traceback, as gRPC answers by itself: a client's bug is not a server fault."""
    def counted(code: str) -> float:
        labels = {"method": method, "code": code}
        return server.metrics.registry.get_sample_value("wavenet_requests_total", labels) or 0.0

    before = counted("INVALID_ARGUMENT"), counted("INTERNAL")
    with grpc.insecure_channel(server.address) as channel:
        call = raw(channel, method, shape)
        with pytest.raises(grpc.RpcError) as error:
            reply = call(iter(messages) if isinstance(messages, list) else messages, timeout=20)
            list(reply) if shape != "unary_unary" else reply
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
        assert (error.value.details() or "").startswith(problem)
        if method != "ListModels":  # counted as the client's fault
            wait_for(lambda: (counted("INVALID_ARGUMENT"), counted("INTERNAL")) == (before[0] + 1, before[1]))
        assert len(collect(pb_grpc.WaveNetStub(channel).Generate(pb.GenerateRequest(samples=64)))[1]) == 64


def test_too_many_frames_in_total_is_refused(stub: pb_grpc.WaveNetStub) -> None:
    block = random_frames(1000, MELS)
    messages = [config_msg()] + [frames_req(block)] * (LIMITS.max_frames // 1000 + 1) + [END]
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Synthesize(iter(messages), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("frames.num_frames: 4000 frames so far and 1000 more exceed the "
                                                     f"limit of {LIMITS.max_frames} ")


def test_health_says_serving(server: RunningServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "wavenet.v1.WaveNet"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_the_startup_log_names_each_models_engine(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from models.generate.compiled import engine_module

    caplog.set_level("INFO", logger="wavenet.server")
    running = RunningServer([f"tiny={model_path}"], 2, LIMITS)
    running.stop()
    events = [json.loads(r.getMessage()) for r in caplog.records if '"event": "serving"' in r.getMessage()]
    assert len(events) == 1
    described = events[0]["models"]["tiny"]
    assert described["max_streams"] == 2  # as started
    module = engine_module()  # the variant this CPU runs, as the server chose it
    assert described["engine"] == (module.VARIANT if module is not None else "reference")
    if module is not None:
        assert described["precision"] in ("fp32", "bf16") and described["threads"] >= 1


def test_synthesize_with_no_frames_ends_at_once_with_a_summary(stub: pb_grpc.WaveNetStub) -> None:
    for messages in ([config_msg(seed=1), END], [config_msg(seed=1)]):  # end marker, or just a half-close
        chunks = list(stub.Synthesize(iter(messages), timeout=20))
        assert sum(c.num_samples for c in chunks) == 0 and chunks[-1].summary.seed == 1


def test_a_chunk_that_cannot_fit_a_message_is_refused_up_front() -> None:
    from server.convert import validate
    from tests.tiny import CONFIGS

    cfg, small = CONFIGS["both"], dataclasses.replace(LIMITS, max_message_bytes=4096)
    fits = pb.GenerateRequest(samples=100, chunk_samples=900, encoding=pb.FLOAT32)  # 3,600 bytes of audio
    assert validate(fits, cfg, small, streamed=False, seed=0).chunk_samples == 900
    with pytest.raises(InvalidField, match="chunk_samples"):
        validate(pb.GenerateRequest(samples=100, chunk_samples=1000, encoding=pb.FLOAT32), cfg, small, False, 0)
    assert validate(pb.GenerateRequest(samples=100, chunk_samples=1000, encoding=pb.MULAW8), cfg, small, False,
                    0).chunk_samples == 1000  # one byte a sample fits


def test_chunks_of_under_5_ms_are_refused() -> None:
    from server.convert import validate
    from tests.tiny import CONFIGS

    cfg = CONFIGS["both"]  # 1,600 Hz: 5 ms is 8 samples
    assert validate(pb.GenerateRequest(samples=100, chunk_samples=8), cfg, LIMITS, False, 0).chunk_samples == 8
    with pytest.raises(InvalidField, match="^chunk_samples: 7 is under 8 samples"):
        validate(pb.GenerateRequest(samples=100, chunk_samples=7), cfg, LIMITS, False, 0)


def test_features_may_cover_no_more_than_max_seconds_of_audio() -> None:
    from server.convert import frame_limit, validate
    from tests.tiny import CONFIGS

    cfg, one_second = CONFIGS["both"], dataclasses.replace(LIMITS, max_seconds=1.0)  # 1,600 samples: 400 frames
    assert frame_limit(one_second, cfg.mel) == 400 and frame_limit(LIMITS, cfg.mel) == LIMITS.max_frames
    assert validate(pb.GenerateRequest(features=frames_msg(random_frames(400, MELS))), cfg, one_second, False,
                    0).frames.shape == (400, MELS)
    with pytest.raises(InvalidField, match="^features.num_frames: 401 exceeds the limit of 400"):
        validate(pb.GenerateRequest(features=frames_msg(random_frames(401, MELS))), cfg, one_second, False, 0)


def test_a_prime_for_a_model_without_features_is_refused_for_the_features() -> None:
    from server.convert import validate
    from tests.tiny import CONFIGS

    prime = pb.Audio(encoding=pb.FLOAT32, data=np.zeros(10, "<f4").tobytes())
    with pytest.raises(InvalidField, match="^config.features: this model takes no features"):
        validate(pb.GenerateRequest(prime=prime), CONFIGS["speaker"], LIMITS, streamed=True, seed=0, field="config")


def test_served_audio_is_the_models_classes_through_its_output_filter(server: RunningServer,
                                                                      stub: pb_grpc.WaveNetStub,
                                                                      model_path: Path) -> None:
    from models import emphasis
    from models.generate.reference import StreamConfig
    from server.loading import load_model

    prime = (0.4 * np.sin(np.arange(300) / 5.0)).astype(np.float32)
    request = pb.GenerateRequest(samples=500, speaker=1, seed=5, encoding=pb.FLOAT32,
                                 prime=pb.Audio(encoding=pb.FLOAT32, data=prime.astype("<f4").tobytes()))
    served = collect(stub.Generate(request))[1]

    local = load_model(f"tiny={model_path}", 1)
    assert local.cfg.preemphasis == 0.85
    gen = local.scheduler.generator
    sid = gen.open(StreamConfig(speaker=1, seed=5, length=500), emphasis.encode(prime, 0.85))
    classes = gen.generate(500, [sid])[sid]
    expected = emphasis.Decoder(0.85, last=float(prime[-1]))(classes)
    assert np.array_equal(served, expected)
    assert not np.array_equal(served, emphasis.Decoder(0.85)(classes))  # the filter starts from the prime


def test_model_specs_with_an_equals_sign_in_the_path(tmp_path: Path) -> None:
    from server.loading import model_spec

    path = tmp_path / "lr=1e-3" / "m.pt"
    path.parent.mkdir()
    path.write_bytes(b"")
    assert model_spec(str(path)) == ("m", str(path))
    assert model_spec(f"fast={path}") == ("fast", str(path))
    assert model_spec("models/default.pt") == ("default", "models/default.pt")
    assert model_spec("a=b=c.pt") == ("a", "b=c.pt")  # not a file: the name ends at the first '='


def test_a_prime_becomes_the_models_classes_and_starts_the_output_filter() -> None:
    from models import emphasis
    from server.convert import validate
    from tests.tiny import CONFIGS

    cfg = dataclasses.replace(CONFIGS["both"], preemphasis=0.85)
    audio = (0.4 * np.sin(np.arange(300) / 5.0)).astype(np.float32)
    primed = pb.GenerateRequest(samples=100, prime=pb.Audio(encoding=pb.FLOAT32, data=audio.astype("<f4").tobytes()))
    req = validate(primed, cfg, LIMITS, streamed=False, seed=0)
    assert req.prime is not None and np.array_equal(req.prime, emphasis.encode(audio, 0.85))
    assert req.prime_last == float(audio[-1])
    assert validate(pb.GenerateRequest(samples=100), cfg, LIMITS, streamed=False, seed=0).prime_last == 0.0


def test_max_streams_is_measured_unless_given_and_a_bad_value_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    from server.service import AUTO, parse_args

    assert parse_args([]).max_streams == AUTO and parse_args(["--max-streams", "Auto"]).max_streams == AUTO
    assert parse_args(["--max-streams", "5"]).max_streams == 5
    for bad in ("0", "-2", "lots"):
        with pytest.raises(SystemExit):
            parse_args(["--max-streams", bad])
        assert "--max-streams" in capsys.readouterr().err


def test_capacity_is_the_most_streams_each_kept_at_the_headroom() -> None:
    from server.capacity import streams_kept

    def engine(total: float) -> Callable[[int], float]:  # a fixed total rate shared by the streams
        return lambda n: total if n > 1 else total / 2  # one stream alone uses half the machine

    assert streams_kept(engine(200_000), 16_000, headroom=1.25)[0] == 10  # 200,000 / 10 = 20,000 = 1.25 x 16,000
    assert streams_kept(engine(19_999 * 2), 16_000, headroom=1.25)[0] == 1
    assert streams_kept(engine(10_000), 16_000, headroom=1.25)[0] == 1  # not even one: still 1, not 0
    assert streams_kept(lambda n: 1e9, 16_000, most=64)[0] == 64
    kept, measured = streams_kept(engine(200_000), 16_000, headroom=1.25)
    assert len(measured) <= 10  # doubling then bisection, not every size


def test_a_measured_capacity_is_used_logged_and_exported(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from server.loading import load_model
    from server.metrics import Metrics
    from server.service import measured_capacity
    from server.servicer import WaveNetService

    loaded = load_model(f"tiny={model_path}", 1)
    with caplog.at_level("INFO", logger="wavenet.server"):
        streams = measured_capacity(loaded)
    event = json.loads(next(r.message for r in caplog.records if '"capacity"' in r.message))
    assert event["max_streams"] == streams >= 1 and event["real_time_factor_by_streams"]["1"] > 0
    loaded.scheduler.max_streams = streams
    metrics = Metrics()
    WaveNetService({"tiny": loaded}, LIMITS, metrics)
    assert metrics.registry.get_sample_value("wavenet_max_streams", {"model": "tiny"}) == streams


def test_the_log_level_is_taken_in_any_case_and_a_wrong_one_is_a_usage_error() -> None:
    """WAVENET_LOG_LEVEL=debug in the container: the server crashed with a traceback, restarting in a loop."""
    from server.service import parse_args

    assert parse_args(["--log-level", "debug"]).log_level == "DEBUG"
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--log-level", "verbose"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("content, cpus", [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1),
                                           ("400000 100000\n", 4), (None, None), ("garbage\n", None)])
def test_a_cgroup_cpu_quota_caps_the_cpus_counted(tmp_path: Path, content: str | None, cpus: int | None) -> None:
    from models.cpus import cgroup_cpus

    path = tmp_path / "cpu.max"
    if content is not None:
        path.write_text(content)
    assert cgroup_cpus(str(path), v1=str(tmp_path / "no-v1")) == cpus


@pytest.mark.parametrize("quota, cpus", [("-1", None), ("150000", 2), ("50000", 1), ("garbage", None)])
def test_a_cgroup_v1_cpu_quota_caps_the_cpus_counted_too(tmp_path: Path, quota: str, cpus: int | None) -> None:
    from models.cpus import cgroup_cpus

    (tmp_path / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpus(str(tmp_path / "no-v2"), v1=str(tmp_path)) == cpus


@pytest.mark.parametrize(("seconds", "rate", "samples"), [(256.002, 48000, 12_288_096), (512.001, 24000, 12_288_024),
                                                          (0.5, 16000, 8000), (1e-6, 16000, 1)])
def test_seconds_count_as_the_decimal_written(seconds: float, rate: int, samples: int) -> None:
    """The proto's seconds is a float32: 256.002 arrives as 256.00201416, 12,288,097 samples at 48 kHz."""
    from server.convert import length_in_samples

    assert length_in_samples(pb.GenerateRequest(seconds=seconds), rate, Limits(max_seconds=600), "") == samples
    limit = Limits(max_seconds=seconds)  # and the limit is met by the same decimal, not exceeded by float32's
    assert length_in_samples(pb.GenerateRequest(seconds=seconds), rate, limit, "") == samples


@pytest.mark.parametrize("flags, message", [
    (["--max-seconds", "-1"], "--max-seconds must be a finite number > 0, got -1.0"),
    (["--max-seconds", "nan"], "--max-seconds must be a finite number > 0, got nan"),
    (["--max-frames", "0"], "--max-frames must be >= 1, got 0"),
    (["--max-message-bytes", "-1"], "--max-message-bytes must be >= 4096, got -1"),
    (["--grace", "inf"], "--grace must be a finite number >= 0, got inf"),
    (["--grace", "-5"], "--grace must be a finite number >= 0, got -5.0"),
    (["--port", "70000"], "--port must be in [0, 65535], got 70000"),
    (["--metrics-port", "70000"], "--metrics-port must be in [0, 65535] (0: off), got 70000"),
])
def test_limits_that_make_no_sense_are_refused_at_start(flags: list[str], message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """They were taken: the server then refused every request while its health check said SERVING."""
    from server.service import main

    assert main(flags) == 2
    assert capsys.readouterr().err == f"wavenet-server: {message}\n"


def test_a_port_another_grpc_server_holds_is_refused(server: RunningServer, model_path: Path) -> None:
    """gRPC sets SO_REUSEPORT by default: a second server on a taken port took half its calls, without a word."""
    import asyncio

    from server.app import serve
    from server.loading import load_model
    from server.metrics import Metrics
    from server.settings import ServeOptions

    async def serve_and_stop() -> None:
        stop = asyncio.Event()
        stop.set()  # return at once once serving
        models = {"tiny": load_model(f"tiny={model_path}", 1)}
        await serve(models, ServeOptions(host="127.0.0.1", port=server.port), Metrics(), stop=stop)

    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        asyncio.run(serve_and_stop())


@pytest.mark.parametrize("host, address", [("127.0.0.1", "127.0.0.1:5"), ("::", "[::]:5"), ("[::]", "[::]:5"),
                                           ("::1", "[::1]:5"), ("localhost", "localhost:5")])
def test_an_ipv6_host_is_bracketed_however_given(host: str, address: str) -> None:
    from server.app import host_port

    assert host_port(host, 5) == address


def test_a_model_folder_adds_its_models_and_its_default_pt_replaces_the_bundled_one(tmp_path: Path) -> None:
    """A default.pt there beside the bundled model of the same name made the container restart forever."""
    from server.loading import model_specs
    from server.settings import DEFAULT_MODEL

    folder = tmp_path / "my models"
    folder.mkdir()
    assert model_specs(None, str(folder)) == ([str(DEFAULT_MODEL)], [])
    for name in ("b.pt", "a b.pt", "notes.txt"):
        (folder / name).touch()
    assert model_specs(None, str(folder))[0] == [str(DEFAULT_MODEL), f"a b={folder}/a b.pt", f"b={folder}/b.pt"]
    (folder / "default.pt").touch()
    assert model_specs(None, str(folder)) == (
        [f"default={folder}/default.pt", f"a b={folder}/a b.pt", f"b={folder}/b.pt"], [])
    run = tmp_path / "lr=1e-3"  # an existing path with '=': named by its stem, 'default'
    run.mkdir()
    (run / "default.pt").touch()
    specs, notes = model_specs([str(run / "default.pt")], str(folder))
    assert specs == [str(run / "default.pt"), f"a b={folder}/a b.pt", f"b={folder}/b.pt"]
    assert notes == [f"--model-dir: {folder}/default.pt not served: a model named 'default' is given by --model"]
    with pytest.raises(ValueError, match="--model-dir .*: not a folder"):
        model_specs(None, str(tmp_path / "none"))


def test_a_model_is_sampled_at_its_own_temperature_unless_a_request_names_one(tmp_path: Path) -> None:
    from models.wavenet import save_checkpoint
    from tests.tiny import tiny_model

    model = tiny_model("both")
    save_checkpoint(tmp_path / "cool.pt", model, {"speakers": ["alice", "bob"], "temperature": 0.5})
    save_checkpoint(tmp_path / "plain.pt", model, {"speakers": ["alice", "bob"]})
    running = RunningServer([f"cool={tmp_path / 'cool.pt'}", f"plain={tmp_path / 'plain.pt'}"], 2, LIMITS)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.WaveNetStub(channel)
            temperatures = {m.name: m.default_temperature for m in stub.ListModels(pb.ListModelsRequest()).models}
            assert temperatures == {"cool": 0.5, "plain": 1.0}

            def audio(model: str, **temperature: float) -> np.ndarray:
                return collect(stub.Generate(pb.GenerateRequest(model=model, samples=400, seed=9, **temperature)))[1]

            assert np.array_equal(audio("cool"), audio("plain", temperature=0.5))
            assert np.array_equal(audio("cool", temperature=1.0), audio("plain"))
            assert not np.array_equal(audio("cool"), audio("plain"))
    finally:
        running.stop()


def test_a_model_whose_temperature_is_not_a_number_is_refused_at_start(tmp_path: Path) -> None:
    from models.wavenet import CheckpointError, save_checkpoint
    from server.loading import load_model
    from tests.tiny import tiny_model

    save_checkpoint(tmp_path / "bad.pt", tiny_model("both"), {"temperature": "warm"})
    with pytest.raises(CheckpointError, match="temperature"):
        load_model(str(tmp_path / "bad.pt"), 1)


def test_metrics_count_first_audio_chunk_gaps_and_samples(model_path: Path) -> None:
    own = RunningServer([f"tiny={model_path}"], MAX_STREAMS, LIMITS)  # no other test's calls in its counts

    def value(name: str) -> float:
        return own.metrics.registry.get_sample_value(name, {"model": "tiny"}) or 0.0

    try:
        with grpc.insecure_channel(own.address) as channel:
            request = pb.GenerateRequest(samples=500, seed=2, chunk_samples=64)
            chunks, audio = collect(pb_grpc.WaveNetStub(channel).Generate(request))
        audible = sum(1 for c in chunks if c.num_samples)
        assert audible > 3
        # each observed before its chunk was written: all in once the client has the last
        assert value("wavenet_time_to_first_audio_seconds_count") == 1
        assert value("wavenet_chunk_gap_seconds_count") == audible - 1
        assert value("wavenet_samples_generated_total") == len(audio)
    finally:
        own.stop()


def test_after_a_short_flush_the_next_chunk_is_at_most_twice_it() -> None:
    from models.emphasis import Decoder
    from server.servicer import Chunker

    chunker = Chunker(Decoder(0.0, 256), chunk_samples=100, encoding=pb.FLOAT32, first=10)
    chunker.add(np.full(75, 128))
    assert [c.num_samples for c in chunker.take(flush=False)] == [10, 20, 40]
    assert [c.num_samples for c in chunker.take(flush=True)] == [5]  # the stream waits for input: what there is
    chunker.add(np.full(300, 128))
    assert [c.num_samples for c in chunker.take(flush=False)] == [10, 20, 40, 80, 100]  # from 5: the first's floor
    assert [c.sequence for c in chunker.take(flush=True)] == [9] and chunker.last(pb.Summary()).first_sample == 375


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_lists_the_services_under_both_names(server: RunningServer, version: str) -> None:
    from grpc_reflection.v1alpha import reflection_pb2

    with grpc.insecure_channel(server.address) as channel:
        info = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                     request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        listed, described = info(iter([reflection_pb2.ServerReflectionRequest(list_services=""),
                                       reflection_pb2.ServerReflectionRequest(file_containing_symbol="wavenet.v1.WaveNet")]),
                                 timeout=10)
    names = {s.name for s in listed.list_services_response.service}
    assert {"wavenet.v1.WaveNet", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # the proto, for a client without the file
