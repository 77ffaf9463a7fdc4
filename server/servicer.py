"""The WaveNet servicer: ListModels, Generate and Synthesize, each call validated (server/convert.py), run by
its model's scheduler (server/scheduler.py), streamed back in chunks, counted and logged."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
import numpy as np

from models.emphasis import Decoder
from models.generate.reference import frames_cover_prime
from server import convert
from server.audio_in import AudioFramer
from server.loading import LoadedModel
from server.metrics import Metrics
from server.scheduler import AtCapacity, GenerationFailed, ShuttingDown, Stream
from server.settings import Limits, first_chunk_samples
from wavenet.codec import Encoding, InvalidField, encode_audio, frames_of
from wavenet.features import MelSpec
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

log = logging.getLogger("wavenet.server")
Context: TypeAlias = grpc.aio.ServicerContext
SERVICE = pb.DESCRIPTOR.services_by_name["WaveNet"]
SERVICE_NAME = SERVICE.full_name


@dataclass
class Call:
    """One call as its log line and metrics tell it."""

    method: str
    model: str
    rid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    started: float = field(default_factory=time.monotonic)
    outcome: str = "OK"
    samples: int = 0  # sent
    first_audio: float | None = None  # seconds from the call's start to its first audio sent
    last_chunk: float = 0.0  # when the last audio chunk went out (time.monotonic())


class Chunker:
    """A stream's audio, decoded from classes, cut into AudioChunks: full ones as they fill, the rest on a flush.
    The first holds at most `first` samples and each next one at most twice the one before, up to chunk_samples
    (the proto's rule): the first audio goes out as soon as a few milliseconds of it are made."""

    def __init__(self, decoder: Decoder, chunk_samples: int, encoding: Encoding, first: int):
        self.decoder, self.chunk_samples, self.encoding = decoder, chunk_samples, encoding
        self.first = min(first, chunk_samples)
        self.size = self.first  # the next full chunk's samples
        self.pending = np.zeros(0, np.float32)  # audio made: pending[sent:] is not yet sent
        self.sent = 0
        self.sequence = 0
        self.first_sample = 0  # of the next chunk

    def add(self, classes: np.ndarray) -> None:
        self.pending, self.sent = np.concatenate([self.pending[self.sent :], self.decoder(classes)]), 0

    def take(self, flush: bool) -> Iterator[pb.AudioChunk]:
        """The chunks ready: every full one, and with flush the partial one left. Each counts as sent once the
        next is asked for (so one that failed to go out is not counted)."""
        while len(self.pending) - self.sent >= self.size or (flush and len(self.pending) > self.sent):
            n = min(self.size, len(self.pending) - self.sent)
            yield pb.AudioChunk(sequence=self.sequence, first_sample=self.first_sample, num_samples=n,
                                encoding=self.encoding,
                                audio=encode_audio(self.pending[self.sent : self.sent + n], self.encoding))
            self.sequence += 1
            self.first_sample += n
            self.sent += n
            self.size = min(max(2 * n, self.first), self.chunk_samples)  # twice the one sent (a flush's may be short)

    def last(self, summary: pb.Summary) -> pb.AudioChunk:
        """The closing chunk: no audio, the call's summary."""
        return pb.AudioChunk(sequence=self.sequence, first_sample=self.first_sample, num_samples=0,
                             encoding=self.encoding, summary=summary)


class WaveNetService(pb_grpc.WaveNetServicer):
    """ListModels, Generate and Synthesize over the loaded models."""

    def __init__(self, models: dict[str, LoadedModel], limits: Limits, metrics: Metrics):
        self.models = models
        self.draining = False  # set on SIGTERM: new calls are refused with UNAVAILABLE
        self.default = next(iter(models))
        self.limits = limits
        self.metrics = metrics
        for name, model in models.items():
            scheduler = model.scheduler
            metrics.active.labels(name).set_function(lambda s=scheduler: s.active)  # type: ignore[misc]
            metrics.capacity.labels(name).set(scheduler.max_streams)

    async def ListModels(self, request: pb.ListModelsRequest | convert.Garbled,
                         context: Context) -> pb.ListModelsResponse:
        if isinstance(request, convert.Garbled):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: {request.problem()}")
        return pb.ListModelsResponse(models=[m.info for m in self.models.values()])

    # Streaming handlers write with context.write rather than yield: a cancelled call then raises inside the
    # handler, so its stream is freed at once (an abandoned async generator is only closed when collected).
    async def Generate(self, request: pb.GenerateRequest | convert.Garbled, context: Context) -> None:
        await self._serve("Generate", request, None, context)

    async def Synthesize(self, request_iterator: AsyncIterator[pb.SynthesizeRequest | convert.Garbled],
                         context: Context) -> None:
        await self._serve("Synthesize", None, request_iterator, context)

    # --- one request, either method -----------------------------------------------------------------
    async def _serve(self, method: str, request: pb.GenerateRequest | convert.Garbled | None,
                     feed: AsyncIterator[pb.SynthesizeRequest | convert.Garbled] | None,
                     context: Context) -> None:
        """Generate's request, or (request None) Synthesize's config read from the feed's first message; every
        outcome counted and logged."""
        call = Call(method, model=self.default)
        stream: Stream | None = None
        try:
            model, req, seed = await self._validated(call, request, feed)
            stream = await _opened(model, req)
            tasks: list[asyncio.Task[None]] = []
            try:
                tasks = await self._started(model, req, stream, feed)
                chunker = await self._send_audio(call, model, req, stream, context)
                await _write(context, chunker.last(self._summary(call, model, seed)))
            finally:
                for task in tasks:
                    task.cancel()
                model.scheduler.close(stream)
        except _Abort as abort:
            call.outcome = abort.code.name
            await _abort_soon(context, abort.code, abort.message)  # not held up by audio the client is not reading
        except _CallEnded:
            call.outcome = "CANCELLED"  # the client left (cancelled, deadline passed) between an await and the write
        except asyncio.CancelledError:
            if stream is None or stream.idle is None:
                call.outcome = "CANCELLED"
                raise
            call.outcome = grpc.StatusCode.OUT_OF_RANGE.name  # the watchdog ended it (as cloud speech APIs answer)
            handler = asyncio.current_task()
            assert handler is not None
            handler.uncancel()
            await _abort_soon(context, grpc.StatusCode.OUT_OF_RANGE, stream.idle)
        except Exception:
            call.outcome = "INTERNAL"  # gRPC answers INTERNAL/UNKNOWN and logs the traceback
            raise
        finally:
            self._record(call)

    async def _validated(self, call: Call, request: pb.GenerateRequest | convert.Garbled | None,
                         feed: AsyncIterator[pb.SynthesizeRequest | convert.Garbled] | None,
                         ) -> tuple[LoadedModel, convert.Request, int]:
        """The model asked for, the request checked against it, and the seed (drawn if none was given)."""
        if self.draining:
            raise _Abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down: retry at another replica")
        if isinstance(request, convert.Garbled):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: {request.problem()}")
        if request is None:
            assert feed is not None
            request = await _config(feed, self.limits.idle_seconds)
        call.model = request.model or self.default
        model = self.models.get(call.model)
        if model is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"model: no model named {request.model!r} "
                                                    f"(have {', '.join(self.models)})")
        seed = request.seed if request.HasField("seed") else secrets.randbits(63)
        try:
            req = convert.validate(request, model.cfg, self.limits, streamed=feed is not None, seed=seed,
                                   default_temperature=model.info.default_temperature,
                                   field="config" if feed is not None else "")
        except InvalidField as exc:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        return model, req, seed

    async def _started(self, model: LoadedModel, req: convert.Request, stream: Stream,
                       feed: AsyncIterator[pb.SynthesizeRequest | convert.Garbled] | None) -> list[asyncio.Task[None]]:
        """The stream's input under way: frames given whole pushed, a live feed read by a task of its own; and the
        watchdog that ends an idle call. The tasks, to cancel when the call ends."""
        feeder = None
        if req.frames is not None:
            await model.scheduler.push_frames(stream, req.frames, req.pitch)
            await model.scheduler.end_frames(stream)
        if feed is not None:
            prime_samples = 0 if req.prime is None else len(req.prime)
            feeder = asyncio.create_task(self._feed(model, stream, feed, prime_samples))
        handler = asyncio.current_task()
        assert handler is not None
        watchdog = asyncio.create_task(self._watch(model, stream, handler, feeder))
        return [watchdog] if feeder is None else [feeder, watchdog]

    async def _send_audio(self, call: Call, model: LoadedModel, req: convert.Request, stream: Stream,
                          context: Context) -> Chunker:
        """The stream's audio as AudioChunks, as generation makes it, until the stream ends."""
        chunker = Chunker(Decoder(model.cfg.preemphasis, model.cfg.classes, req.prime_last), req.chunk_samples,
                          req.encoding, first_chunk_samples(model.cfg.sample_rate))
        while True:
            try:
                block = await model.scheduler.read(stream)
                stream.active_at = time.monotonic()
            except InvalidField as exc:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            except GenerationFailed as exc:
                raise _Abort(grpc.StatusCode.INTERNAL, f"generation failed: {exc}") from None
            except ShuttingDown as exc:
                raise _Abort(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
            if block is not None:
                chunker.add(block)
            # Full chunks as they fill; a partial one when nothing more can come until the client sends frames (a
            # live feed hears its audio at once) or at the end.
            for chunk in chunker.take(flush=block is None or (stream.starved and stream.chunks.empty())):
                if isinstance(stream.error, ShuttingDown):  # the grace is over: not the rest of what was made
                    raise _Abort(grpc.StatusCode.UNAVAILABLE, str(stream.error))
                now = time.monotonic()
                if call.first_audio is None:
                    call.first_audio = now - call.started
                    self.metrics.ttfa.labels(call.model).observe(call.first_audio)
                else:
                    self.metrics.chunk_gap.labels(call.model).observe(now - call.last_chunk)
                call.last_chunk = now
                await _write(context, chunk)
                stream.active_at = time.monotonic()
                call.samples += chunk.num_samples
                self.metrics.samples.labels(call.model).inc(chunk.num_samples)
            if block is None:
                return chunker

    def _summary(self, call: Call, model: LoadedModel, seed: int) -> pb.Summary:
        """What the last AudioChunk says of the call; its real-time factor observed."""
        wall = time.monotonic() - call.started
        rtf = call.samples / model.cfg.sample_rate / max(wall, 1e-9)
        self.metrics.rtf.labels(call.model).observe(rtf)
        return pb.Summary(samples=call.samples, wall_seconds=wall, real_time_factor=rtf,
                          time_to_first_audio_seconds=call.first_audio or wall, seed=seed, request_id=call.rid)

    def _record(self, call: Call) -> None:
        """A finished call counted by outcome and logged as one JSON line."""
        self.metrics.requests.labels(call.method, call.outcome).inc()
        wall = time.monotonic() - call.started
        sample_rate = self.models[call.model].cfg.sample_rate if call.model in self.models else 1
        log.info(json.dumps({
            "request_id": call.rid, "method": call.method, "model": call.model, "outcome": call.outcome,
            "seconds": round(call.samples / sample_rate, 3), "wall_seconds": round(wall, 3),
            "rtf": round(call.samples / sample_rate / max(wall, 1e-9), 2),
            "ttfa_ms": None if call.first_audio is None else round(1000 * call.first_audio, 1),
        }))

    async def _feed(self, model: LoadedModel, stream: Stream,
                    feed: AsyncIterator[pb.SynthesizeRequest | convert.Garbled], prime_samples: int) -> None:
        """Synthesize's input side: frames (or recorded audio, made into frames) into the generator as they
        arrive; a bad message fails the stream."""
        assert model.cfg.mel is not None
        feeding = _Feeding(model, stream, convert.frame_limit(self.limits, model.cfg.mel), prime_samples)
        try:
            number = 1  # the config
            async for message in feed:
                number += 1
                stream.active_at = time.monotonic()
                if isinstance(message, convert.Garbled):
                    raise InvalidField("request", message.problem(f"message {number}: "))
                await feeding.take(message)
            if not feeding.ended:  # a half-close ends the input too
                await feeding.end()
        except InvalidField as exc:
            model.scheduler.fail(stream, exc)
        except grpc.aio.AioRpcError:
            pass  # the call is gone; the handler's cancellation cleans up
        except Exception as exc:  # noqa: BLE001 - a bug here must end this call, not leave it waiting for frames
            log.exception("reading the input of a Synthesize call failed")
            model.scheduler.fail(stream, GenerationFailed(f"reading the input failed: {type(exc).__name__}: {exc}"))

    async def _watch(self, model: LoadedModel, stream: Stream, handler: asyncio.Task[Any],
                     feeder: asyncio.Task[None] | None) -> None:
        """Cancel the handler of a call that has received no input, made no audio and sent none for
        limits.idle_seconds, so a client that went quiet without closing cannot hold a stream slot for ever."""
        idle = self.limits.idle_seconds
        while (left := stream.active_at + idle - time.monotonic()) > 0:
            await asyncio.sleep(left)
        if feeder is not None and not feeder.done() and model.scheduler.generator.ready(stream.sid) == 0:
            stream.idle = f"frames: none arrived for {idle:g} s (the server's --idle-seconds)"
        else:
            stream.idle = f"audio: the client read none for {idle:g} s (the server's --idle-seconds)"
        handler.cancel()


async def _opened(model: LoadedModel, req: convert.Request) -> Stream:
    """A stream for the request in the model's scheduler, or the status that refuses it."""
    try:
        return await model.scheduler.open(req.stream, req.prime)
    except AtCapacity as exc:
        raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
    except ValueError as exc:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None


async def _config(feed: AsyncIterator[pb.SynthesizeRequest | convert.Garbled],
                  idle_seconds: float) -> pb.GenerateRequest:
    """Synthesize's first message, which must be the config, and come within idle_seconds."""
    try:
        first = await asyncio.wait_for(feed.__anext__(), idle_seconds)
    except StopAsyncIteration:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "config: the stream ended before the config") from None
    except TimeoutError:
        raise _Abort(grpc.StatusCode.OUT_OF_RANGE, f"config: none arrived for {idle_seconds:g} s (the server's "
                                                   "--idle-seconds)") from None
    if isinstance(first, convert.Garbled):
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: {first.problem('message 1: ')}")
    if first.WhichOneof("kind") != "config":
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "config: the first message must be the config")
    return first.config


ABORT_SECONDS = 2.0  # how long an abort may wait to be sent before the call is dropped instead


async def _abort_soon(context: Context, code: grpc.StatusCode, message: str) -> None:
    """context.abort, or, if the status cannot be sent within ABORT_SECONDS (queued behind audio a client is not
    reading), cancellation: the handler ends now and the status still goes out if the client reads on."""
    abort = asyncio.ensure_future(context.abort(code, message))
    # its outcome retrieved whatever becomes of this handler (cancelled while it waits: the client left), else
    # asyncio logs "Task exception was never retrieved" (bench/soak.py once counted 295 in 10 minutes)
    abort.add_done_callback(lambda task: task.cancelled() or task.exception())
    done, _ = await asyncio.wait({abort}, timeout=ABORT_SECONDS)
    if abort in done and not abort.cancelled() and not isinstance(abort.exception(), grpc.aio.InternalError):
        abort.result()  # raises the AbortError that ends the call
    # the status could not be sent in time, or not at all (gRPC's ExecuteBatchError: the client has left)
    raise asyncio.CancelledError


WRITE_SETTLE_SECONDS = 0.2  # how long a failed write waits for gRPC to report the client's leaving


async def _write(context: Context, chunk: pb.AudioChunk) -> None:
    """context.write, with the failure of a write to a call that has already ended as _CallEnded.

    gRPC raises its internal ExecuteBatchError (a grpc.aio.InternalError) for such a write rather than cancelling
    the handler, which would otherwise end the handler with a traceback in the log. The client's leaving may reach
    the call a moment after the write fails: the handler waits WRITE_SETTLE_SECONDS for it (a cancellation then
    ends the handler as any other) before calling the failure an error.
    """
    try:
        await context.write(chunk)
    except grpc.aio.InternalError as exc:
        deadline = time.monotonic() + WRITE_SETTLE_SECONDS
        while not (context.done() or context.cancelled()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if context.done() or context.cancelled():
            raise _CallEnded(str(exc)) from exc
        raise  # a failed write on a live call is a real error


class _Feeding:
    """One Synthesize call's input messages after its config: frames, or recorded audio made into frames, until
    its end; InvalidField naming the field of a message that does not fit."""

    def __init__(self, model: LoadedModel, stream: Stream, limit: int, prime_samples: int):
        assert model.cfg.mel is not None
        self.model, self.stream, self.limit, self.prime_samples = model, stream, limit, prime_samples
        self.mel: MelSpec = model.cfg.mel
        self.received = 0  # frames
        self.ended = False
        self.kind: str | None = None  # "frames" or "audio", whichever the call sends
        self.framer: AudioFramer | None = None

    async def take(self, message: pb.SynthesizeRequest) -> None:
        kind = message.WhichOneof("kind")
        if kind == "config":
            raise InvalidField("config", "only the first message may carry the config")
        if self.ended:
            raise InvalidField(kind or "kind", "message after end of input")
        if kind in ("frames", "audio"):
            if self.kind not in (None, kind):
                raise InvalidField(kind, f"this call sent {self.kind}: a call sends frames or audio, not both")
            self.kind = kind
        if kind == "frames":
            if self.received + message.frames.num_frames > self.limit:
                raise InvalidField("frames.num_frames", f"{self.received} frames so far and "
                                   f"{message.frames.num_frames} more exceed the limit of {self.limit} frames "
                                   "per call (the server's --max-frames, and --max-seconds of audio)")
            frames = frames_of(message.frames, self.mel, self.limit, "frames")
            await self._push(frames, convert.pitch_of(message.frames, self.model.cfg, "frames"))
        elif kind == "audio":
            if self.framer is None:
                self.framer = AudioFramer(self.mel, message.audio, self.limit)
            # off the event loop: resampling and the STFT of a long message would stall every stream's audio
            await self._push(await asyncio.to_thread(self.framer.add, message.audio), None)
        elif kind == "end":
            await self.end()
        else:
            raise InvalidField("kind", "empty message: set config, frames, audio or end")

    async def end(self) -> None:
        self.ended = True
        if self.framer is not None:  # NORMALISED: the whole recording's frames now, off the event loop
            await self._push(await asyncio.to_thread(self.framer.end), None)
        if self.prime_samples and not frames_cover_prime(self.received, self.mel.hop, self.prime_samples):
            raise InvalidField("config.prime", f"the frames cover {self.received * self.mel.hop} samples: the "
                               f"prime ({self.prime_samples}) must be shorter than the audio they cover")
        await self.model.scheduler.end_frames(self.stream)

    async def _push(self, frames: np.ndarray, given_pitch: np.ndarray | None) -> None:
        if len(frames):
            self.received += len(frames)
            await self.model.scheduler.push_frames(self.stream, frames, given_pitch)


class _CallEnded(Exception):
    """The call ended under a write: nobody is left to tell."""


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


# --- the process ------------------------------------------------------------------------------------


HANDLERS = {  # (client streaming, server streaming): gRPC's handler of that shape
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_service(servicer: WaveNetService, server: grpc.aio.Server) -> None:
    """Register the service's methods as the generated add_WaveNetServicer_to_server does, from the proto's
    descriptor, except that a request that does not parse reaches its handler as convert.Garbled."""
    handlers = {
        method.name: HANDLERS[method.client_streaming, method.server_streaming](
            getattr(servicer, method.name),
            request_deserializer=convert.lenient(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in SERVICE.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
