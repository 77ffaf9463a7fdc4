"""Serving speed as a caller feels it: start a wavenet-server, drive N concurrent streams over loopback (Synthesize
with test frames, paced or not, or free-running Generate), report each stream's real-time factor and the time to
first audio (TTFA) percentiles over every call.

Prints a table, then one JSON line. Run: python bench/serve.py [--streams 8] [--seconds 2] [--method generate]
[--realtime] [--calls 20] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.api import FRAMES_PER_MESSAGE, Chunk, WaveNetClient, frame_blocks
from server.settings import DEFAULT_MODEL
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(address: str, server: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    """Wait until the server's health check says SERVING; fail at once if the server exits."""
    deadline = time.monotonic() + seconds
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with code {server.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server at {address} not healthy after {seconds} s")
            time.sleep(0.2)


def test_frames(n_frames: int, n_mels: int, seed: int) -> np.ndarray:
    """Real log-mel frames from the prepared test split when present, else a smooth random walk."""
    prepared = ROOT / "data" / "fillets" / "test" / "frames.npy"
    rng = np.random.default_rng(seed)
    if prepared.is_file():
        frames = np.load(prepared, mmap_mode="r")
        if frames.shape[1] == n_mels and len(frames) > n_frames:
            start = int(rng.integers(0, len(frames) - n_frames))
            return np.array(frames[start : start + n_frames])
    return np.cumsum(rng.normal(scale=0.3, size=(n_frames, n_mels)), axis=0).astype(np.float32) - 5.0


def synthesize_call(client: WaveNetClient, info: pb.ModelInfo, seconds: float, seed: int,
                    realtime: bool) -> dict[str, float]:
    """One Synthesize of `seconds` of test frames in blocks of FRAMES_PER_MESSAGE (paced like a live feed when
    realtime). TTFA counts from the first block's sending: it covers the model's lookahead, so audio can begin."""
    hop = info.features.hop
    frames = test_frames(round(seconds * info.sample_rate / hop), info.features.channels, seed)
    pace = hop / info.sample_rate if realtime else 0.0
    first_sent: list[float] = []

    def blocks() -> Iterator[np.ndarray]:
        for block in frame_blocks(frames, FRAMES_PER_MESSAGE, pace):
            if not first_sent:
                first_sent.append(time.monotonic())
            yield block

    return timed_call(lambda: client.synthesize(blocks(), seed=seed, speaker=0), info.sample_rate, first_sent)


def generate_call(client: WaveNetClient, info: pb.ModelInfo, seconds: float, seed: int) -> dict[str, float]:
    """One Generate of `seconds` of free-running audio; TTFA counts from the call's start."""
    return timed_call(lambda: client.generate(seconds, seed=seed, speaker=0), info.sample_rate, [])


def timed_call(call: Callable[[], Iterator[Chunk]], sample_rate: int, input_at: list[float]) -> dict[str, float]:
    """Seconds of audio, wall time, real-time factor and time to first audio of one call. Both count from the
    call's origin: input_at[0] when the call has set it by its first audio (the first frames sent), else the call's
    start. The real-time factor is the audio's seconds over the seconds from the origin to the last audio: a paced
    stream the server keeps up with ends within one message of its last frames, so above 1.0; one that falls
    behind ends later, below it."""
    started = time.monotonic()
    first = last = None
    samples = 0
    late = 0.0  # the most a chunk arrived after a listener who began playing at the first audio needed it
    for chunk in call():
        if len(chunk.audio):
            last = time.monotonic()
            first = last if first is None else first
            late = max(late, last - first - samples / sample_rate)
        samples += len(chunk.audio)
    wall = time.monotonic() - started
    audio_seconds = samples / sample_rate
    origin = input_at[0] if input_at else started
    last = last if last is not None else started + wall
    return {"audio_seconds": audio_seconds, "wall": wall, "rtf": audio_seconds / (last - origin), "late": late,
            "ttfa": (first if first is not None else started + wall) - origin}


def one_stream(address: str, method: str, seconds: float, seed: int, realtime: bool, calls: int) -> list[dict]:
    """`calls` calls one after another on one connection (the first of the warm-up's kind)."""
    with WaveNetClient(address) as client:
        info = client.model()
        if method == "generate":
            return [generate_call(client, info, seconds, seed + 1000 * k) for k in range(calls)]
        return [synthesize_call(client, info, seconds, seed + 1000 * k, realtime) for k in range(calls)]


def metric(metrics_port: int, name: str, where: str = "") -> float:
    """The sum of a server's samples of metric `name` (those whose labels contain `where`), from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and where in line)


def server_capacity(metrics_port: int) -> int:
    """The server's wavenet_max_streams (what --max-streams auto measured)."""
    return int(metric(metrics_port, "wavenet_max_streams"))


def one_too_many(address: str, streams: int, metrics_port: int) -> dict[str, float | str]:
    """Once the server holds `streams` streams, one Generate more: its status and how long the answer took
    (connecting included); code "not full" if the server never held them all."""
    deadline = time.monotonic() + 30
    while metric(metrics_port, "wavenet_active_streams") < streams:
        if time.monotonic() > deadline:
            return {"code": "not full", "answer_ms": 0.0}
        time.sleep(0.01)
    with grpc.insecure_channel(address) as channel:
        started = time.monotonic()
        try:
            for _ in pb_grpc.WaveNetStub(channel).Generate(pb.GenerateRequest(seconds=1.0), timeout=30):
                pass
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name if isinstance(error, grpc.Call) else "?"
    return {"code": code, "answer_ms": round(1000 * (time.monotonic() - started), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--streams", default="8", help="concurrent streams, or auto: the server's own --max-streams auto "
                                                  "capacity, and one caller more, who must be refused at once")
    p.add_argument("--seconds", type=float, default=2.0, help="audio per stream")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--realtime", action="store_true", help="pace frames like a live feed (synthesize)")
    p.add_argument("--method", choices=("synthesize", "generate"), default="synthesize",
                   help="Synthesize with test frames (the vocoder) or free-running Generate")
    p.add_argument("--calls", type=int, default=1, help="calls per stream, one after another (TTFA percentiles)")
    args = p.parse_args(argv)
    if args.method == "generate" and args.realtime:
        p.error("--realtime paces frames: Generate takes none")
    auto = args.streams == "auto"
    if not auto and not (args.streams.isdigit() and int(args.streams) >= 1):
        p.error(f"--streams: a number >= 1 or auto, got {args.streams}")

    port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "server.service", "--model", args.model, "--port", str(port),
                               "--max-streams", "auto" if auto else args.streams, "--metrics-port", str(metrics_port),
                               "--log-level", "WARNING"], cwd=ROOT)
    refused: dict[str, float | str] = {}
    try:
        wait_healthy(address, server)
        streams = server_capacity(metrics_port) if auto else int(args.streams)
        one_stream(address, args.method, 0.2, 0, False, 1)  # warm-up
        started = time.monotonic()
        with ThreadPoolExecutor(streams) as pool:
            running = [pool.submit(one_stream, address, args.method, args.seconds, i + 1, args.realtime, args.calls)
                       for i in range(streams)]
            if auto:
                refused = one_too_many(address, streams, metrics_port)
            per_stream = [f.result() for f in running]
        wall = time.monotonic() - started
        results = [r for calls in per_stream for r in calls]
    finally:
        server.terminate()
        server.wait(30)
    total_audio = sum(r["audio_seconds"] for r in results)
    ttfa = np.array([r["ttfa"] for r in results]) * 1000
    result = {
        "method": args.method,
        "paced": args.realtime,
        "streams": streams,
        "streams_from": "the server's --max-streams auto" if auto else "--streams",
        "calls_per_stream": args.calls,
        "seconds_per_stream": args.seconds,
        "aggregate_rtf": round(total_audio / wall, 3),
        "min_stream_rtf": round(min(r["rtf"] for r in results), 3),
        # the worst lateness of any chunk for a listener who began playing at the call's first audio (0: it never
        # ran dry); a paced stream's audio cannot come before its frames, so it shows the jitter buffer it needs
        "max_late_ms": round(1000 * max(r["late"] for r in results), 1),
        "ttfa_ms_p50": round(float(np.percentile(ttfa, 50)), 1),
        "ttfa_ms_p90": round(float(np.percentile(ttfa, 90)), 1),
        "ttfa_ms_p99": round(float(np.percentile(ttfa, 99)), 1),
        # TTFA and each stream's real-time factor count from the same instant: this one
        "ttfa_from": "the call's start" if args.method == "generate" else
                     f"sending the first block of {FRAMES_PER_MESSAGE} frames (it covers the model's lookahead)",
        **({"one_more_caller": refused} if auto else {}),
    }
    print(f"model {args.model}; {streams} concurrent {args.method.capitalize()} streams of {args.seconds:g} s"
          f"{' (paced)' if args.realtime else ''}, {args.calls} call(s) each, over loopback")
    for key, value in result.items():
        print(f"{key:<20} {value}")
    print(json.dumps(result))
    if auto and refused.get("code") != "RESOURCE_EXHAUSTED":
        print(f"one caller past the capacity was not refused: {refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
