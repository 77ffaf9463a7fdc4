"""Serving speed: start a wavenet-server, drive N concurrent Synthesize streams over loopback, report RTFs and TTFA.

Prints a table, then one JSON line. Run: python bench/serve.py [--streams 8] [--seconds 2] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.api import FRAMES_PER_MESSAGE, WaveNetClient, frame_blocks
from server.settings import DEFAULT_MODEL

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


def one_stream(address: str, seconds: float, seed: int, realtime: bool) -> dict[str, float]:
    with WaveNetClient(address) as client:
        info = client.model()
        hop = info.features.hop
        frames = test_frames(round(seconds * info.sample_rate / hop), info.features.channels, seed)
        pace = hop / info.sample_rate if realtime else 0.0
        started = time.monotonic()
        first = None
        samples = 0
        for chunk in client.synthesize(frame_blocks(frames, FRAMES_PER_MESSAGE, pace), seed=seed, speaker=0):
            if first is None and len(chunk.audio):
                first = time.monotonic() - started
            samples += len(chunk.audio)
        wall = time.monotonic() - started
    audio_seconds = samples / info.sample_rate
    return {"audio_seconds": audio_seconds, "wall": wall, "rtf": audio_seconds / wall, "ttfa": first or wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0, help="audio per stream")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--realtime", action="store_true", help="pace frames like a live feed")
    args = p.parse_args(argv)

    port = free_port()
    address = f"127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "server.service", "--model", args.model, "--port", str(port),
                               "--max-streams", str(max(args.streams, 1)), "--log-level", "WARNING"], cwd=ROOT)
    try:
        wait_healthy(address, server)
        one_stream(address, 0.2, 0, False)  # warm-up
        started = time.monotonic()
        with ThreadPoolExecutor(args.streams) as pool:
            results = list(pool.map(lambda i: one_stream(address, args.seconds, i + 1, args.realtime),
                                    range(args.streams)))
        wall = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(30)
    total_audio = sum(r["audio_seconds"] for r in results)
    ttfa = np.array([r["ttfa"] for r in results]) * 1000
    result = {
        "streams": args.streams,
        "seconds_per_stream": args.seconds,
        "aggregate_rtf": round(total_audio / wall, 3),
        "min_stream_rtf": round(min(r["rtf"] for r in results), 3),
        "ttfa_ms_p50": round(float(np.percentile(ttfa, 50)), 1),
        "ttfa_ms_p99": round(float(np.percentile(ttfa, 99)), 1),
    }
    print(f"model {args.model}; {args.streams} concurrent Synthesize streams of {args.seconds:g} s "
          f"({'paced' if args.realtime else 'unpaced'}) over loopback")
    for key, value in result.items():
        print(f"{key:<20} {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
