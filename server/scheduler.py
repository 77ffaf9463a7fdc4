"""Continuous batching: one scheduler per model owns its generator and steps every active stream together."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from models.generate.reference import Generator, StreamConfig
from server.settings import BUFFER_SECONDS, STEP_TARGET_SECONDS, first_chunk_samples


class AtCapacity(RuntimeError):
    """Every stream slot is taken."""


class ShuttingDown(RuntimeError):
    """The server is stopping and this stream did not finish within the grace."""


class GenerationFailed(RuntimeError):
    """Making this stream's audio failed on the server's side: the generator raised stepping it, or reading its
    input did."""


@dataclass
class Stream:
    """The serving side of one generator stream: what the scheduler made and the handler has not read yet."""

    sid: int
    chunks: asyncio.Queue[np.ndarray | None] = field(default_factory=asyncio.Queue)  # None: finished
    buffered: int = 0  # samples made and not yet read
    starved: bool = False  # made all that its frames so far allow: waiting for input, so the reader should flush
    finished: bool = False
    error: BaseException | None = None
    active_at: float = field(default_factory=time.monotonic)  # last input received, audio made or sent: idle clock
    idle: str | None = None  # why the call was ended for being idle
    made: int = 0  # samples generated so far: a new stream's steps ramp up from its first chunk (_steps_for)


class Scheduler:
    """Steps all streams with samples ready as one batch, in a worker thread; streams join and leave between steps.

    A stream whose reader falls more than BUFFER_SECONDS behind is skipped until it reads: back-pressure that never
    holds the others back.
    """

    def __init__(self, generator: Generator, max_streams: int):
        self.generator = generator
        self.max_streams = max_streams
        self.buffer_limit = round(BUFFER_SECONDS * generator.cfg.sample_rate)
        self.streams: dict[int, Stream] = {}
        self._lock = asyncio.Lock()  # held while the generator runs in the worker thread
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generator")
        self._steps = 64  # steps per batch call, adapted to STEP_TARGET_SECONDS
        self._first_steps = first_chunk_samples(generator.cfg.sample_rate)  # a new stream's first step
        self._task: asyncio.Task[None] | None = None
        self._closing: list[int] = []  # closed streams whose generator slots the loop has yet to free
        self._opening = 0  # opens admitted and waiting for the lock
        self.samples_generated = 0

    @property
    def active(self) -> int:
        return len(self.streams)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    # --- called by request handlers -----------------------------------------------------------------
    async def open(self, config: StreamConfig, prime: np.ndarray | None = None) -> Stream:
        """Admit a stream, or raise AtCapacity at once.

        The slot is reserved before waiting for the lock (the batch loop holds it during a step), so opens that
        arrive together cannot all pass the check and admit more than max_streams.
        """
        if len(self.streams) + self._opening >= self.max_streams:
            raise AtCapacity(f"all {self.max_streams} streams are busy: retry in a moment, or at another replica")
        self._opening += 1
        try:
            async with self._lock:
                sid = self.generator.open(config, prime)
        finally:
            self._opening -= 1
        stream = Stream(sid)
        self.streams[sid] = stream
        self._wake.set()
        return stream

    async def push_frames(self, stream: Stream, frames: np.ndarray, given_pitch: np.ndarray | None = None) -> None:
        async with self._lock:
            self.generator.push_frames(stream.sid, frames, given_pitch)
        stream.starved = False
        self._wake.set()

    async def end_frames(self, stream: Stream) -> None:
        async with self._lock:
            self.generator.end_frames(stream.sid)
        self._wake.set()

    async def read(self, stream: Stream) -> np.ndarray | None:
        """The next block of classes the stream made, or None once it is finished."""
        block = await stream.chunks.get()
        if block is None:
            if stream.error is not None:
                raise stream.error
            return None
        stream.buffered -= len(block)
        self._wake.set()
        return block

    def shut_down(self) -> None:
        """End every stream still running with ShuttingDown (the server's grace is over)."""
        for stream in self.streams.values():
            _finish(stream, ShuttingDown("the server is shutting down and this stream ran past its grace: retry "
                                         "the rest elsewhere"))

    def fail(self, stream: Stream, error: BaseException) -> None:
        """End the stream with an error its reader will raise."""
        _finish(stream, error)

    def close(self, stream: Stream) -> None:
        """Forget the stream at once (finished, cancelled or failed); the loop frees its generator slot.

        Synchronous, so a handler being cancelled cannot be interrupted half-way through its clean-up.
        """
        if self.streams.pop(stream.sid, None) is not None:
            self._closing.append(stream.sid)
            self._wake.set()

    # --- the batch loop -----------------------------------------------------------------------------
    def _runnable(self) -> list[int]:
        return [sid for sid, s in self.streams.items()
                if not s.finished and s.buffered < self.buffer_limit and self.generator.ready(sid) > 0]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if self._closing:
                async with self._lock:
                    for sid in self._closing:
                        self.generator.close(sid)
                    self._closing.clear()
            self._finish_done()
            sids = self._runnable()
            if not sids:
                await self._wake.wait()
                continue
            async with self._lock:
                sids = [sid for sid in sids if sid in self.streams]  # one may have closed meanwhile
                started = time.perf_counter()
                steps = self._steps_for(sids)
                try:
                    out = await loop.run_in_executor(self._executor, self.generator.generate, steps, sids)
                except Exception as exc:  # noqa: BLE001 - fail these streams, keep serving the rest
                    await self._fail_one_by_one(sids, exc)
                    continue
                elapsed = time.perf_counter() - started
            self._adapt(elapsed, max((len(v) for v in out.values()), default=0))
            for sid, classes in out.items():
                stream = self.streams.get(sid)
                if stream is not None:
                    self._deliver(stream, classes)
            await asyncio.sleep(0)  # let handlers run between batch steps

    def _steps_for(self, sids: list[int]) -> int:
        """Steps for this batch call: the adapted count, but while a stream is new, as many as it has made so far
        (its first chunk's at first): its first audio comes after milliseconds of work, and what it has made
        stays ahead of a listener who starts playing it at once, as the steps double up to the adapted count."""
        ramp = [max(self._first_steps, s.made) for s in map(self.streams.__getitem__, sids) if s.made < self._steps]
        return min([self._steps, *ramp])

    def _deliver(self, stream: Stream, classes: np.ndarray) -> None:
        """Hand a stream's new classes to its reader, saying whether it now waits for input."""
        stream.made += len(classes)
        self.samples_generated += len(classes)
        stream.buffered += len(classes)
        stream.starved = self.generator.ready(stream.sid) == 0 and not self.generator.done(stream.sid)
        stream.chunks.put_nowait(classes)

    def _finish_done(self) -> None:
        """Tell the readers of streams that have made all they will (an empty input finishes at once)."""
        for sid, stream in self.streams.items():
            if self.generator.done(sid):
                _finish(stream)

    def _adapt(self, elapsed: float, steps: int) -> None:
        """Size the next batch call to about STEP_TARGET_SECONDS of work."""
        if steps < self._steps or elapsed <= 0:
            return
        wanted = self._steps * STEP_TARGET_SECONDS / elapsed
        self._steps = int(min(4096, max(8, 0.5 * self._steps + 0.5 * wanted)))

    async def _fail_one_by_one(self, sids: list[int], exc: Exception) -> None:
        """A batch step raised: fail the streams that also raise alone."""
        del exc
        loop = asyncio.get_running_loop()
        for sid in sids:
            stream = self.streams.get(sid)
            if stream is None:
                continue
            try:
                out = await loop.run_in_executor(self._executor, self.generator.generate, 1, [sid])
            except Exception as alone:  # noqa: BLE001
                self.fail(stream, GenerationFailed(f"{type(alone).__name__}: {alone}"))
                continue
            for classes in out.values():
                self._deliver(stream, classes)


def _finish(stream: Stream, error: BaseException | None = None) -> None:
    """Tell the stream's reader that nothing more will come (then raise error, if any); once."""
    if not stream.finished:
        stream.error = error
        stream.finished = True
        stream.chunks.put_nowait(None)
