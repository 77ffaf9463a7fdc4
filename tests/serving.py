"""A real server on a loopback port, serving a tiny model the tests save themselves (fixtures for tests/conftest)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from models.wavenet import save_checkpoint
from server.app import serve
from server.loading import LoadedModel, load_model
from server.metrics import Metrics
from server.settings import Limits, ServeOptions
from tests.tiny import tiny_model
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc


class RunningServer:
    """serve() in a thread with its own event loop; stop() drains it."""

    def __init__(self, specs: list[str], max_streams: int, limits: Limits, grace: float = 1.0, **extra: object):
        self.port = 0
        self.extra = extra
        self.models: dict[str, LoadedModel] = {}
        self.metrics = Metrics()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(specs, max_streams, limits, grace), daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"server did not start: {self._error}")
        self.address = f"127.0.0.1:{self.port}"

    def _run(self, specs: list[str], max_streams: int, limits: Limits, grace: float) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            models = {m.name: m for m in (load_model(s, max_streams) for s in specs)}
            self.models = models
            options = ServeOptions(host="127.0.0.1", port=0, limits=limits, grace=grace, **self.extra)
            await serve(models, options, self.metrics, on_ready=self._on_ready, stop=self._stop)

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc
            self._ready.set()

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def stop(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def wait_for(predicate: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny_model("both")
    model.cfg = dataclasses.replace(model.cfg, preemphasis=0.85)  # the output filter, as the shipped model has
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    save_checkpoint(path, model, {"speakers": ["alice", "bob"]})
    return path


LIMITS = Limits(max_seconds=20.0, max_frames=4000, max_message_bytes=256 * 1024)
MAX_STREAMS = 6


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[RunningServer]:
    running = RunningServer([f"tiny={model_path}"], MAX_STREAMS, LIMITS)
    yield running
    running.stop()


@pytest.fixture
def stub(server: RunningServer) -> Iterator[pb_grpc.WaveNetStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.WaveNetStub(channel)

