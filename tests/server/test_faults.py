"""Faults: failing steps, slow and vanished clients, bad models at start-up, SIGTERM with streams running."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from models.generate.reference import Generator, StreamConfig
from server.scheduler import AtCapacity, Scheduler
from tests.serving import LIMITS, RunningServer, wait_for
from tests.tiny import TINY_MEL, tiny_model
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
POISON = 0.123  # a temperature the injected fault recognises
MELS = TINY_MEL.n_mels


@pytest.fixture
def own_server(model_path: Path) -> Iterator[RunningServer]:
    running = RunningServer([f"tiny={model_path}"], 4, LIMITS)
    yield running
    running.stop()


def test_an_exception_in_a_step_fails_that_stream_only(own_server: RunningServer) -> None:
    scheduler = own_server.models["tiny"].scheduler
    generator = scheduler.generator
    real_generate = generator.generate

    def faulty(max_steps: int, sids: list[int] | None = None) -> dict[int, np.ndarray]:
        chosen = generator.streams if sids is None else sids
        if any(generator.streams[sid].config.temperature == pytest.approx(POISON) for sid in chosen):
            raise RuntimeError("injected fault")
        return real_generate(max_steps, sids)

    generator.generate = faulty  # type: ignore[method-assign]
    with grpc.insecure_channel(own_server.address) as channel:
        stub = pb_grpc.WaveNetStub(channel)
        good = [stub.Generate(pb.GenerateRequest(samples=3000, seed=s)) for s in range(2)]
        with pytest.raises(grpc.RpcError) as error:
            list(stub.Generate(pb.GenerateRequest(samples=3000, temperature=POISON)))
        assert error.value.code() == grpc.StatusCode.INTERNAL and "injected fault" in (error.value.details() or "")
        assert [sum(c.num_samples for c in call) for call in good] == [3000, 3000]
        assert sum(c.num_samples for c in stub.Generate(pb.GenerateRequest(samples=100))) == 100
    wait_for(lambda: scheduler.active == 0)


def test_a_slow_reader_is_paused_while_others_finish() -> None:
    async def scenario() -> None:
        scheduler = Scheduler(Generator(tiny_model("both")), max_streams=4)
        scheduler.start()
        slow = await scheduler.open(StreamConfig(seed=1, length=10**6))
        fast = await scheduler.open(StreamConfig(seed=2, length=6_000))
        got = 0
        while (block := await scheduler.read(fast)) is not None:  # the other stream runs to its end ...
            got += len(block)
        assert got == 6_000
        limit = scheduler.buffer_limit
        assert limit <= slow.buffered <= limit + 4096  # ... while the unread one stopped near its limit
        before = slow.buffered
        await asyncio.sleep(0.2)
        assert slow.buffered == before  # and stays stopped
        for _ in range(5):
            await scheduler.read(slow)
        for _ in range(1500):  # reading resumes it (polled: a loaded machine may take a while)
            if scheduler.samples_generated > before + 6_000:
                break
            await asyncio.sleep(0.02)
        assert scheduler.samples_generated > before + 6_000
        scheduler.close(slow)
        scheduler.close(fast)
        assert scheduler.active == 0
        await scheduler.stop()

    asyncio.run(scenario())


def test_opens_arriving_during_a_step_do_not_exceed_max_streams() -> None:
    async def scenario() -> None:
        generator = Generator(tiny_model("both"))
        real_generate = generator.generate

        def slow(max_steps: int, sids: list[int] | None = None) -> dict[int, np.ndarray]:
            time.sleep(0.05)  # a batch step: the loop holds the lock meanwhile
            return real_generate(max_steps, sids)

        generator.generate = slow  # type: ignore[method-assign]
        scheduler = Scheduler(generator, max_streams=2)
        scheduler.start()
        await scheduler.open(StreamConfig(seed=1, length=10**6))
        await asyncio.sleep(0.01)  # the loop is inside a step
        results = await asyncio.gather(*(scheduler.open(StreamConfig(seed=s, length=10**6)) for s in range(5)),
                                       return_exceptions=True)
        assert scheduler.active == 2
        assert sum(isinstance(r, AtCapacity) for r in results) == 4
        await scheduler.stop()

    asyncio.run(scenario())


CLIENT = """
import sys, grpc
from wavenet.v1 import wavenet_pb2 as pb, wavenet_pb2_grpc as pb_grpc
stub = pb_grpc.WaveNetStub(grpc.insecure_channel(sys.argv[1]))
for chunk in stub.Generate(pb.GenerateRequest(seconds=15)):
    print("audio", flush=True)
"""


def test_a_killed_client_frees_its_slot(own_server: RunningServer) -> None:
    scheduler = own_server.models["tiny"].scheduler
    client = subprocess.Popen([sys.executable, "-c", CLIENT, own_server.address], stdout=subprocess.PIPE, cwd=ROOT)
    assert client.stdout is not None and client.stdout.readline().strip() == b"audio"
    assert scheduler.active == 1
    client.kill()
    client.wait()
    wait_for(lambda: scheduler.active == 0)


@pytest.mark.parametrize("problem", ["missing", "truncated", "not a checkpoint", "a second model of its name"])
def test_a_bad_model_at_start_up_is_one_line_and_exit_2(tmp_path: Path, model_path: Path, problem: str) -> None:
    path = tmp_path / "bad.pt"
    models = ["--model", str(path)]
    if problem == "truncated":
        path.write_bytes(model_path.read_bytes()[:500])
    elif problem == "not a checkpoint":
        path.write_text("hello")
    elif problem == "a second model of its name":  # the second replaced the first without a word
        path = tmp_path / "other" / model_path.name
        path.parent.mkdir()
        path.write_bytes(model_path.read_bytes())
        models = ["--model", str(model_path), "--model", str(path)]
    done = subprocess.run([sys.executable, "-m", "server.service", *models, "--port", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wavenet-server: ") and str(path) in lines[0]


def test_a_port_in_use_is_one_line_and_exit_2(model_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "server.service", "--model", str(model_path), "--host",
                               "127.0.0.1", "--port", str(port)], capture_output=True, text=True, cwd=ROOT,
                              timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr  # gRPC's core may log a line of its own first
    assert done.stderr.strip().splitlines()[-1].startswith(f"wavenet-server: cannot listen on 127.0.0.1:{port}")


def test_a_failure_reading_synthesize_input_ends_that_call_with_internal(own_server: RunningServer) -> None:
    scheduler = own_server.models["tiny"].scheduler

    async def broken(stream: object, frames: np.ndarray, given_pitch: np.ndarray | None) -> None:
        raise RuntimeError("injected input fault")

    scheduler.push_frames = broken  # type: ignore[method-assign]
    frames = pb.FeatureFrames(values=np.zeros(10 * MELS, np.float32).tolist(), num_frames=10)
    messages = [pb.SynthesizeRequest(config=pb.GenerateRequest()), pb.SynthesizeRequest(frames=frames)]
    with grpc.insecure_channel(own_server.address) as channel:
        stub = pb_grpc.WaveNetStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            list(stub.Synthesize(iter(messages + [pb.SynthesizeRequest(end=pb.EndOfInput())]), timeout=30))
        assert error.value.code() == grpc.StatusCode.INTERNAL, error.value.details()
        assert "injected input fault" in (error.value.details() or "")
        assert sum(c.num_samples for c in stub.Generate(pb.GenerateRequest(samples=100))) == 100
    wait_for(lambda: scheduler.active == 0)


IDLE_LIMITS = dataclasses.replace(LIMITS, idle_seconds=0.5, max_seconds=600.0)


@pytest.fixture
def idle_server(model_path: Path) -> Iterator[RunningServer]:
    running = RunningServer([f"tiny={model_path}"], 4, IDLE_LIMITS)
    yield running
    running.stop()


def test_a_synthesize_call_whose_frames_stop_coming_is_ended_as_idle(idle_server: RunningServer) -> None:
    scheduler = idle_server.models["tiny"].scheduler
    resume = threading.Event()

    def messages() -> Iterator[pb.SynthesizeRequest]:
        yield pb.SynthesizeRequest(config=pb.GenerateRequest())
        yield pb.SynthesizeRequest(frames=pb.FeatureFrames(values=np.zeros(10 * MELS).tolist(), num_frames=10))
        resume.wait(60)  # the client goes quiet without closing its side

    with grpc.insecure_channel(idle_server.address) as channel:
        stub = pb_grpc.WaveNetStub(channel)
        received = 0
        with pytest.raises(grpc.RpcError) as error:
            for chunk in stub.Synthesize(messages(), timeout=30):
                received += chunk.num_samples
        resume.set()
        assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE, error.value.details()
        assert (error.value.details() or "").startswith("frames: none arrived for 0.5 s")
        assert received > 0  # the audio its frames allowed came first
    wait_for(lambda: scheduler.active == 0)


def test_a_synthesize_call_that_never_sends_its_config_is_ended_as_idle(idle_server: RunningServer) -> None:
    resume = threading.Event()

    def messages() -> Iterator[pb.SynthesizeRequest]:
        resume.wait(60)  # opens the call, sends nothing
        yield from ()

    with grpc.insecure_channel(idle_server.address) as channel:
        with pytest.raises(grpc.RpcError) as error:
            list(pb_grpc.WaveNetStub(channel).Synthesize(messages(), timeout=30))
        resume.set()
    assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE, error.value.details()
    assert (error.value.details() or "").startswith("config: none arrived for 0.5 s")


def test_frames_streamed_past_max_seconds_of_audio_are_refused(model_path: Path) -> None:
    running = RunningServer([f"tiny={model_path}"], 4, dataclasses.replace(LIMITS, max_seconds=1.0))  # 400 frames
    block = pb.FeatureFrames(values=np.zeros(300 * MELS, np.float32).tolist(), num_frames=300)
    messages = [pb.SynthesizeRequest(config=pb.GenerateRequest()), pb.SynthesizeRequest(frames=block),
                pb.SynthesizeRequest(frames=block), pb.SynthesizeRequest(end=pb.EndOfInput())]
    try:
        with grpc.insecure_channel(running.address) as channel:
            with pytest.raises(grpc.RpcError) as error:
                list(pb_grpc.WaveNetStub(channel).Synthesize(iter(messages), timeout=30))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
        assert (error.value.details() or "").startswith("frames.num_frames: 300 frames so far and 300 more exceed "
                                                         "the limit of 400 frames per call")
    finally:
        running.stop()


def test_a_generate_call_whose_client_stops_reading_is_ended_as_idle(idle_server: RunningServer) -> None:
    scheduler = idle_server.models["tiny"].scheduler
    # a fixed 64 KiB receive window (no bandwidth probing), far less than 600 s of float32 audio at 1600 Hz
    with grpc.insecure_channel(idle_server.address, options=[("grpc.http2.bdp_probe", 0)]) as channel:
        stub = pb_grpc.WaveNetStub(channel)
        call = stub.Generate(pb.GenerateRequest(seconds=600, encoding=pb.FLOAT32), timeout=60)
        next(call)  # then read nothing
        wait_for(lambda: scheduler.active == 0)

        def ended() -> float:  # counted while the client still reads nothing: the handler is not stuck behind it
            labels = {"method": "Generate", "code": "OUT_OF_RANGE"}
            return idle_server.metrics.registry.get_sample_value("wavenet_requests_total", labels) or 0.0

        wait_for(lambda: ended() == 1)
        with pytest.raises(grpc.RpcError) as error:
            for _ in call:
                pass
        assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE, error.value.details()
        assert (error.value.details() or "").startswith("audio: the client read none for 0.5 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_finishes_short_streams_ends_live_ones_unavailable_and_refuses_new(model_path: Path) -> None:
    """SIGTERM: a short stream finishes within the grace; a live Synthesize, whose client keeps sending frames and
    never ends its input, cannot finish whatever the machine's speed, and is ended UNAVAILABLE at the grace."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "server.service", "--model", f"tiny={model_path}", "--port",
                               str(port), "--grace", "3", "--log-level", "WARNING"], cwd=ROOT)
    hung_up = threading.Event()

    def live_feed() -> Iterator[pb.SynthesizeRequest]:
        yield pb.SynthesizeRequest(config=pb.GenerateRequest(chunk_samples=16))
        while not hung_up.is_set():  # a frame every 20 ms until the test is over: the input never ends
            yield pb.SynthesizeRequest(frames=pb.FeatureFrames(values=[0.0] * MELS, num_frames=1))
            hung_up.wait(0.02)

    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = pb_grpc.WaveNetStub(channel)
            short = stub.Generate(pb.GenerateRequest(samples=1600, chunk_samples=16))
            live = stub.Synthesize(live_feed())
            next(short), next(live)
            results: dict[str, object] = {}

            def drain(name: str, call: Iterator[pb.AudioChunk], first: int) -> None:
                try:
                    results[name] = first + sum(chunk.num_samples for chunk in call)
                except grpc.RpcError as exc:
                    results[name] = exc.code()

            threads = [threading.Thread(target=drain, args=("short", short, 16)),
                       threading.Thread(target=drain, args=("live", live, 0))]
            for t in threads:
                t.start()
            os.kill(server.pid, signal.SIGTERM)

            def refused() -> bool:  # new calls are turned away once the server has taken the signal
                try:
                    list(stub.Generate(pb.GenerateRequest(samples=10), timeout=5))
                except grpc.RpcError as exc:  # a call caught mid-transition may end CANCELLED: try again
                    return exc.code() == grpc.StatusCode.UNAVAILABLE
                return False

            wait_for(refused)
            for t in threads:
                t.join(90)
        assert results["short"] == 1600  # finished within the grace period
        assert results["live"] == grpc.StatusCode.UNAVAILABLE  # ended at the grace, retryable
        assert server.wait(30) == 0
    finally:
        hung_up.set()
        server.kill()


class _GoneAfterFirstWrite:
    """A servicer context whose call ends after one chunk, as when a client's deadline passes mid-stream:
    gRPC then fails the next write with its internal ExecuteBatchError."""

    def __init__(self) -> None:
        self.chunks: list[pb.AudioChunk] = []

    async def write(self, chunk: pb.AudioChunk) -> None:
        from grpc._cython import cygrpc

        if self.chunks:
            raise cygrpc.ExecuteBatchError('Failed "execute_batch": (SendMessageOperation,)')
        self.chunks.append(chunk)

    def done(self) -> bool:
        return bool(self.chunks)  # the call ended once the first chunk was out

    def cancelled(self) -> bool:
        return False

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"abort({code}, {details}) on a call that has ended")


def test_a_write_to_a_call_that_ended_frees_the_stream_quietly(model_path: Path) -> None:
    from server.loading import load_model
    from server.metrics import Metrics
    from server.servicer import WaveNetService

    async def main() -> tuple[WaveNetService, int, _GoneAfterFirstWrite]:
        loaded = load_model(f"tiny={model_path}", 2)
        loaded.scheduler.start()
        service = WaveNetService({"tiny": loaded}, LIMITS, Metrics())
        context = _GoneAfterFirstWrite()
        try:
            await service.Generate(pb.GenerateRequest(samples=4000, seed=1, chunk_samples=500), context)  # type: ignore[arg-type]
            return service, loaded.scheduler.active, context
        finally:
            await loaded.scheduler.stop()

    service, active, context = asyncio.run(main())
    assert len(context.chunks) == 1 and active == 0  # no exception escaped; the stream was freed
    assert service.metrics.requests.labels("Generate", "CANCELLED")._value.get() == 1


class _BrokenWhileLive(_GoneAfterFirstWrite):
    """A write that fails on a call that is still live: a real error, not a client that left."""

    def done(self) -> bool:
        return False


def test_a_write_failing_on_a_live_call_is_an_error_not_a_cancellation(model_path: Path) -> None:
    from grpc._cython import cygrpc

    from server.loading import load_model
    from server.metrics import Metrics
    from server.servicer import WaveNetService

    async def main() -> tuple[WaveNetService, int]:
        loaded = load_model(f"tiny={model_path}", 2)
        loaded.scheduler.start()
        service = WaveNetService({"tiny": loaded}, LIMITS, Metrics())
        try:
            with pytest.raises(cygrpc.ExecuteBatchError):
                await service.Generate(pb.GenerateRequest(samples=4000, seed=1, chunk_samples=500),
                                       _BrokenWhileLive())  # type: ignore[arg-type]
            return service, loaded.scheduler.active
        finally:
            await loaded.scheduler.stop()

    service, active = asyncio.run(main())
    assert active == 0
    assert service.metrics.requests.labels("Generate", "INTERNAL")._value.get() == 1


class _LeftJustBeforeWrite(_GoneAfterFirstWrite):
    """A client that left as the second chunk was written: the write fails first, the call reports its
    cancellation a moment later (the order the soak once met, logged as an ERROR by gRPC)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed_at: float | None = None

    async def write(self, chunk: pb.AudioChunk) -> None:
        if self.chunks and self.failed_at is None:
            self.failed_at = time.monotonic()
        await super().write(chunk)

    def done(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return self.failed_at is not None and time.monotonic() > self.failed_at + 0.05


def test_a_write_failing_just_before_the_client_leaves_is_a_cancellation(model_path: Path) -> None:
    from server.loading import load_model
    from server.metrics import Metrics
    from server.servicer import WaveNetService

    async def main() -> tuple[WaveNetService, int]:
        loaded = load_model(f"tiny={model_path}", 2)
        loaded.scheduler.start()
        service = WaveNetService({"tiny": loaded}, LIMITS, Metrics())
        try:
            await service.Generate(pb.GenerateRequest(samples=4000, seed=1, chunk_samples=500),
                                   _LeftJustBeforeWrite())  # type: ignore[arg-type]
            return service, loaded.scheduler.active
        finally:
            await loaded.scheduler.stop()

    service, active = asyncio.run(main())  # no exception escapes the handler
    assert active == 0
    assert service.metrics.requests.labels("Generate", "CANCELLED")._value.get() == 1
    assert service.metrics.requests.labels("Generate", "INTERNAL")._value.get() == 0


class LeftCall:
    """A call whose client has gone: sending the status fails (as gRPC's ExecuteBatchError does) after `delay`."""

    def __init__(self, delay: float):
        self.delay = delay

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        await asyncio.sleep(self.delay)
        raise grpc.aio.InternalError("Failed \"execute_batch\"")


def test_an_abort_outliving_its_cancelled_handler_is_not_logged_as_never_retrieved() -> None:
    """The soak's 295 "Task exception was never retrieved" errors in 10 minutes: a client that leaves while its
    call's status is being sent cancels the handler, and the abort task then failed with nobody to retrieve it."""
    import gc

    from server.servicer import _abort_soon

    async def scenario() -> list[str]:
        unhandled: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context["message"]))
        handler = asyncio.ensure_future(_abort_soon(LeftCall(0.05), grpc.StatusCode.INVALID_ARGUMENT, "speaker: …"))
        await asyncio.sleep(0.01)
        handler.cancel()  # the client left: gRPC cancels the handler
        with pytest.raises(asyncio.CancelledError):
            await handler
        await asyncio.sleep(0.1)  # the abort fails after its handler has gone
        del handler
        gc.collect()
        return unhandled

    assert asyncio.run(scenario()) == []



def test_an_abort_to_a_client_that_has_left_ends_the_handler_as_a_cancellation() -> None:
    """Sending the status fails at once (the client left before gRPC cancelled the handler): the handler ends
    cancelled, which gRPC logs at debug level, not with its ExecuteBatchError as an ERROR."""
    from server.servicer import _abort_soon

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_abort_soon(LeftCall(0.0), grpc.StatusCode.RESOURCE_EXHAUSTED, "all streams busy"))
