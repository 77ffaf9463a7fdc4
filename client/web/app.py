"""`wavenet-web`: a browser playground for a wavenet-server, itself a gRPC client of it (the server stays pure gRPC).

It serves one page (client/web/static: plain HTML and JavaScript, nothing fetched from elsewhere), the server's
models as JSON, and a WebSocket that relays one Generate or Synthesize call per connection:

  browser -> relay   a JSON text message: {"method": "generate", "seconds": 2, "speaker": 0, "temperature": 0.7,
                     "seed": 1, "model": ""} or {"method": "vocode", "sample_rate": 48000, "channels": 1, ...};
                     for vocode, then binary messages of float32 little-endian samples (channels interleaved) and
                     a text message {"end": true}
  relay -> browser   binary messages of float32 little-endian mono audio at the model's rate, as it is made; then
                     one text message, {"type": "summary", ...} or {"type": "error", "code": ..., "message": ...}

A WebSocket that closes early cancels its gRPC call, so the server frees the stream at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from wavenet.defaults import DEFAULT_PORT, MAX_MESSAGE_BYTES
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_WEB_PORT = 8080
TOKEN_ENV = "WAVENET_TOKEN"
MAX_BLOCK_SAMPLES = 65_536  # per RecordedAudio message: well within the gRPC message limit at 8 channels


@dataclass(frozen=True)
class Upstream:
    """How the relay reaches the gRPC server."""

    target: str = f"localhost:{DEFAULT_PORT}"
    tls: bool = False
    ca: bytes | None = None
    token: str | None = None

    def channel(self) -> grpc.aio.Channel:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if self.tls or self.ca:
            return grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials(self.ca), options)
        return grpc.aio.insecure_channel(self.target, options)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


class BadRequest(Exception):
    """A browser's request that cannot be relayed; the message names the field."""


def model_json(info: pb.ModelInfo) -> dict[str, Any]:
    return {"name": info.name, "sample_rate": info.sample_rate, "speakers": list(info.speakers),
            "vocoder": info.HasField("features"), "free_running": info.free_running,
            "default_temperature": round(info.default_temperature, 4)}


def generate_request(spec: dict[str, Any]) -> pb.GenerateRequest:
    """The GenerateRequest (Generate's request, or Synthesize's config) a browser's JSON asks for."""
    request = pb.GenerateRequest(model=str(spec.get("model") or ""), encoding=pb.FLOAT32)
    for name, kind in (("speaker", int), ("temperature", float), ("seed", int)):
        value = spec.get(name)
        if value is None or value == "":
            continue
        try:
            setattr(request, name, kind(value))
        except (TypeError, ValueError, OverflowError):
            raise BadRequest(f"{name}: {value!r} is not a number of the right kind") from None
    if spec.get("method") == "generate":
        try:
            request.seconds = float(spec.get("seconds", 0))
        except (TypeError, ValueError):
            raise BadRequest(f"seconds: {spec.get('seconds')!r} is not a number") from None
    return request


def recorded_audio(spec: dict[str, Any], data: bytes) -> list[pb.RecordedAudio]:
    """A browser's block of float32 samples as RecordedAudio messages (the format the JSON gave)."""
    loudness = pb.AS_SENT if spec.get("loudness") == "AS_SENT" else pb.NORMALISED
    try:
        rate, channels = int(spec.get("sample_rate", 0)), int(spec.get("channels", 1))
    except (TypeError, ValueError):
        raise BadRequest("sample_rate, channels: not integers") from None
    step = 4 * max(1, channels) * MAX_BLOCK_SAMPLES
    return [pb.RecordedAudio(encoding=pb.FLOAT32, sample_rate=rate, channels=channels, loudness=loudness,
                             data=data[i : i + step]) for i in range(0, len(data), step)]


async def browser_input(websocket: WebSocket, spec: dict[str, Any]) -> AsyncIterator[pb.SynthesizeRequest]:
    """Synthesize's requests: the config, then the browser's audio blocks as they come, until its end."""
    yield pb.SynthesizeRequest(config=generate_request(spec))
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            for audio in recorded_audio(spec, message["bytes"]):
                yield pb.SynthesizeRequest(audio=audio)
        elif json.loads(message.get("text") or "{}").get("end"):
            yield pb.SynthesizeRequest(end=pb.EndOfInput())
            return


async def relay(websocket: WebSocket, call: Any) -> None:
    """The call's audio to the browser as it comes, then its summary."""
    async for chunk in call:
        if chunk.audio:
            await websocket.send_bytes(chunk.audio)  # float32 LE: the request asked FLOAT32
        if chunk.HasField("summary"):
            s = chunk.summary
            await websocket.send_text(json.dumps({
                "type": "summary", "samples": s.samples, "seed": str(s.seed), "real_time_factor": s.real_time_factor,
                "time_to_first_audio_ms": 1000 * s.time_to_first_audio_seconds, "request_id": s.request_id}))


async def watch_disconnect(websocket: WebSocket) -> None:
    """Returns when the browser goes away (Generate's input side has nothing else to read)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


def build_app(upstream: Upstream) -> Starlette:
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["channel"] = upstream.channel()
        state["stub"] = pb_grpc.WaveNetStub(state["channel"])
        yield
        await state["channel"].close()

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def models(request: Request) -> JSONResponse:
        try:
            response = await state["stub"].ListModels(pb.ListModelsRequest(), metadata=upstream.metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return JSONResponse({"error": f"{exc.code().name}: {exc.details()}"}, status_code=502)
        return JSONResponse({"server": upstream.target, "models": [model_json(m) for m in response.models]})

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        call = None
        try:
            spec = json.loads(await websocket.receive_text())
            if not isinstance(spec, dict) or spec.get("method") not in ("generate", "vocode"):
                raise BadRequest("method: 'generate' or 'vocode'")
            stub = state["stub"]
            if spec["method"] == "generate":
                call = stub.Generate(generate_request(spec), metadata=upstream.metadata)
                watcher = asyncio.ensure_future(watch_disconnect(websocket))
            else:
                call = stub.Synthesize(browser_input(websocket, spec), metadata=upstream.metadata)
                watcher = None
            sending = asyncio.ensure_future(relay(websocket, call))
            done, _ = await asyncio.wait({t for t in (sending, watcher) if t}, return_when=asyncio.FIRST_COMPLETED)
            if sending not in done:  # the browser left: the call goes too
                call.cancel()
            for task in (sending, watcher):
                if task and not task.done():
                    task.cancel()
            await sending
        except (WebSocketDisconnect, asyncio.CancelledError):
            if call is not None:
                call.cancel()
            return
        except (BadRequest, json.JSONDecodeError) as exc:
            await send_error(websocket, "INVALID_ARGUMENT", f"request: {exc}")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                await send_error(websocket, exc.code().name, exc.details() or "")
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()

    return Starlette(routes=[Route("/", index), Route("/api/models", models), WebSocketRoute("/ws", stream),
                             Mount("/static", StaticFiles(directory=STATIC), name="static")], lifespan=lifespan)


async def send_error(websocket: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.send_text(json.dumps({"type": "error", "code": code, "message": message}))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="wavenet-web", description="A browser playground for a wavenet-server.")
    p.add_argument("--server", default=f"localhost:{DEFAULT_PORT}",
                   help=f"host:port of the wavenet-server (default localhost:{DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1", help="address the page is served on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_WEB_PORT, help=f"its port (default {DEFAULT_WEB_PORT})")
    p.add_argument("--tls", action="store_true", help="reach the server with TLS (default: plaintext)")
    p.add_argument("--ca", help="PEM file of the CA that signed the server's certificate (implies --tls)")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"bearer token (default ${TOKEN_ENV})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    try:
        ca = Path(args.ca).read_bytes() if args.ca else None
    except OSError as exc:
        print(f"wavenet-web: cannot read --ca {args.ca}: {exc.strerror}", file=sys.stderr)
        return 2
    upstream = Upstream(args.server, tls=args.tls, ca=ca, token=args.token)
    print(f"wavenet-web: http://{args.host}:{args.port}/ (server {args.server})", file=sys.stderr)
    uvicorn.run(build_app(upstream), host=args.host, port=args.port, log_level="warning", ws="websockets-sansio")
    return 0

