"""Property-based fuzzing against a live server: it always answers with a status, never INTERNAL or UNKNOWN,
and keeps serving well-formed requests. Bounded here; a longer run: WAVENET_FUZZ_EXAMPLES=400 pytest -k fuzz."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.settings import Limits
from tests.serving import RunningServer
from tests.tiny import TINY_MEL
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

EXAMPLES = int(os.environ.get("WAVENET_FUZZ_EXAMPLES", "25"))
FUZZ_LIMITS = Limits(max_seconds=0.2, max_frames=120, max_prime_seconds=0.1, max_message_bytes=64 * 1024)
ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}

floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
small_frames = st.builds(
    lambda values, n: pb.FeatureFrames(values=values, num_frames=n),
    st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=3 * TINY_MEL.n_mels),
    st.integers(0, 4),
)
good_frames = st.integers(1, 30).map(lambda n: pb.FeatureFrames(values=[0.5] * (n * TINY_MEL.n_mels), num_frames=n))
audio = st.builds(lambda e, d: pb.Audio(encoding=e, data=d), st.integers(0, 5), st.binary(max_size=400))


@st.composite
def generate_requests(draw: st.DrawFn) -> pb.GenerateRequest:
    request = pb.GenerateRequest()
    if draw(st.booleans()):
        request.model = draw(st.sampled_from(["", "tiny", "nope", "../tiny", "tiny\x00"]))
    if draw(st.booleans()):
        request.speaker = draw(st.integers(0, 2**32 - 1))
    length = draw(st.sampled_from(["none", "seconds", "samples"]))
    if length == "seconds":
        request.seconds = draw(floats)
    elif length == "samples":
        request.samples = draw(st.one_of(st.integers(0, 400), st.integers(0, 2**64 - 1)))
    if draw(st.booleans()):
        request.temperature = draw(floats)
    if draw(st.booleans()):
        request.seed = draw(st.integers(0, 2**64 - 1))
    request.encoding = draw(st.integers(0, 6))
    request.chunk_samples = draw(st.one_of(st.integers(0, 300), st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        request.prime.CopyFrom(draw(audio))
    if draw(st.booleans()):
        request.features.CopyFrom(draw(st.one_of(small_frames, good_frames)))
    return request


messages = st.one_of(
    generate_requests().map(lambda r: pb.SynthesizeRequest(config=r)),
    st.one_of(small_frames, good_frames).map(lambda f: pb.SynthesizeRequest(frames=f)),
    st.just(pb.SynthesizeRequest(end=pb.EndOfInput())),
    st.just(pb.SynthesizeRequest()),
)


@pytest.fixture(scope="module")
def fuzz_stub(model_path: Path) -> Iterator[pb_grpc.WaveNetStub]:
    running = RunningServer([f"tiny={model_path}"], 8, FUZZ_LIMITS)
    with grpc.insecure_channel(running.address) as channel:
        yield pb_grpc.WaveNetStub(channel)
    running.stop()


def answered(call: Iterator[pb.AudioChunk]) -> None:
    """Drain a call: it ends with OK or an allowed status and a message."""
    try:
        chunks = list(call)
    except grpc.RpcError as error:
        assert error.code() in ALLOWED, (error.code(), error.details())
        assert error.details()
        return
    assert chunks and chunks[-1].HasField("summary")
    assert sum(c.num_samples for c in chunks) == chunks[-1].summary.samples


def still_serving(stub: pb_grpc.WaveNetStub) -> None:
    assert sum(c.num_samples for c in stub.Generate(pb.GenerateRequest(samples=32), timeout=30)) == 32


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(request=generate_requests())
def test_fuzz_generate(fuzz_stub: pb_grpc.WaveNetStub, request: pb.GenerateRequest) -> None:
    answered(fuzz_stub.Generate(request, timeout=30))
    still_serving(fuzz_stub)


@SETTINGS
@given(sequence=st.lists(messages, max_size=6))
def test_fuzz_synthesize(fuzz_stub: pb_grpc.WaveNetStub, sequence: list[pb.SynthesizeRequest]) -> None:
    answered(fuzz_stub.Synthesize(iter(sequence), timeout=30))
    still_serving(fuzz_stub)
