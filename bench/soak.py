"""Soak: for N minutes, 2 x --max-streams clients of mixed behaviour against live servers (--replicas of them, each
with --max-streams; the clients spread over them round-robin and retry a refusal on another, as client/api.py's
service config says); then report outcomes, exact lengths, INTERNAL/UNKNOWN errors, the servers' ERROR log lines,
their memory, the calls each served and the active-streams gauge.

Prints a table, then one JSON line. Run: python bench/soak.py --minutes 10 [--max-streams 8] [--replicas 3]
[--model PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np

from bench.serve import free_port, metric, wait_healthy
from client.api import SPREAD_OPTIONS, channel_target
from server.settings import DEFAULT_MODEL
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
BEHAVIOURS = ("normal", "vocode", "cancel", "slow", "deadline", "malformed")


def rss_mb(pid: int) -> float | None:
    """Resident memory of a running process; None for one that has exited (a zombie has no VmRSS)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:")), None)


class Tally:
    """Outcomes of all clients, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: Counter[str] = Counter()
        self.completed = 0
        self.wrong_length = 0
        self.wrong: list[str] = []  # the first few calls of the wrong length, for the report

    def add(self, code: str, expected: int | None = None, got: int | None = None, behaviour: str = "") -> None:
        with self.lock:
            self.codes[code] += 1
            if code == "OK" and expected is not None:
                self.completed += 1
                self.wrong_length += int(got != expected)
                if got != expected:
                    self.wrong.append(f"{behaviour}: {got} samples, {expected} asked")


def frames(n: int, channels: int, rng: random.Random) -> Iterator[pb.SynthesizeRequest]:
    values = np.asarray([rng.gauss(-4.0, 1.0) for _ in range(n * channels)], np.float32)
    for i in range(0, n, 8):
        block = values[i * channels : min(n, i + 8) * channels]
        yield pb.SynthesizeRequest(frames=pb.FeatureFrames(values=block.tolist(), num_frames=len(block) // channels))


def client_loop(address: str, info: pb.ModelInfo, until: float, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    rate = info.sample_rate
    hop = info.features.hop if info.HasField("features") else 0
    with grpc.insecure_channel(channel_target(address), options=SPREAD_OPTIONS) as channel:
        stub = pb_grpc.WaveNetStub(channel)
        while time.monotonic() < until:
            behaviour = rng.choice(BEHAVIOURS if hop else tuple(b for b in BEHAVIOURS if b != "vocode"))
            samples = rng.randint(rate // 20, rate // 4)
            request = pb.GenerateRequest(samples=samples, seed=rng.getrandbits(32), speaker=0)
            expected: int | None = samples
            try:
                if behaviour == "vocode":
                    n = max(1, samples // hop)
                    expected = n * hop
                    messages = [pb.SynthesizeRequest(config=pb.GenerateRequest(seed=1)),
                                *frames(n, info.features.channels, rng), pb.SynthesizeRequest(end=pb.EndOfInput())]
                    got = sum(c.num_samples for c in stub.Synthesize(iter(messages), timeout=120))
                elif behaviour == "cancel":
                    call = stub.Generate(request, timeout=120)
                    for _ in range(rng.randint(0, 3)):
                        next(call, None)
                    call.cancel()
                    tally.add("CANCELLED")
                    continue
                elif behaviour == "slow":
                    got = 0
                    for chunk in stub.Generate(request, timeout=120):
                        got += chunk.num_samples
                        time.sleep(rng.uniform(0.0, 0.05))
                elif behaviour == "deadline":
                    got = sum(c.num_samples for c in stub.Generate(request, timeout=rng.uniform(0.01, 0.5)))
                elif behaviour == "malformed":
                    bad: Callable[[], pb.GenerateRequest] = rng.choice([
                        lambda: pb.GenerateRequest(seconds=-1.0),
                        lambda: pb.GenerateRequest(samples=10, speaker=9999),
                        lambda: pb.GenerateRequest(samples=10, temperature=float("nan")),
                        lambda: pb.GenerateRequest(samples=10, model="nope"),
                        lambda: pb.GenerateRequest(features=pb.FeatureFrames(values=[1.0], num_frames=3)),
                    ])
                    expected = None
                    got = sum(c.num_samples for c in stub.Generate(bad(), timeout=60))
                else:
                    got = sum(c.num_samples for c in stub.Generate(request, timeout=120))
                tally.add("OK", expected, got, behaviour)
            except grpc.RpcError as error:
                tally.add(error.code().name)
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    time.sleep(rng.uniform(0.01, 0.1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--max-streams", type=int, default=8)
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--replicas", type=int, default=1, help="servers, each with --max-streams; clients: 2 x one's")
    args = p.parse_args(argv)

    ports = [(free_port(), free_port()) for _ in range(args.replicas)]
    logs = [tempfile.TemporaryFile("w+") for _ in ports]
    servers = [subprocess.Popen([sys.executable, "-m", "server.service", "--model", args.model, "--port", str(port),
                                 "--max-streams", str(args.max_streams), "--metrics-port", str(metrics_port),
                                 "--log-level", "WARNING"], cwd=ROOT, stderr=log)
               for (port, metrics_port), log in zip(ports, logs)]
    address = ",".join(f"127.0.0.1:{port}" for port, _ in ports)
    try:
        for (port, _), server, log in zip(ports, servers, logs):
            try:
                wait_healthy(f"127.0.0.1:{port}", server)
            except (RuntimeError, TimeoutError):
                log.seek(0)
                sys.stderr.write(log.read())  # the server's reason
                raise
        rss_start = [rss_mb(server.pid) for server in servers]
        with grpc.insecure_channel(f"127.0.0.1:{ports[0][0]}") as channel:
            info = pb_grpc.WaveNetStub(channel).ListModels(pb.ListModelsRequest()).models[0]
        tally = Tally()
        started = time.monotonic()
        until = started + 60 * args.minutes
        clients = [threading.Thread(target=client_loop, args=(address, info, until, i, tally), daemon=True)
                   for i in range(2 * args.max_streams)]
        for c in clients:
            c.start()
        time.sleep(min(60.0, 0.2 * 60 * args.minutes))
        rss_warm = [rss_mb(server.pid) for server in servers]
        for c in clients:
            c.join()
        time.sleep(1.0)
        alive = all(server.poll() is None for server in servers)  # a server that died is the finding: report it
        active_after = sum(metric(m, "wavenet_active_streams") for _, m in ports) if alive else None
        served = [metric(m, "wavenet_requests_total", 'code="OK"') for _, m in ports] if alive else None
        rss_end = [rss_mb(server.pid) for server in servers] if alive else None
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(60)
    internal = tally.codes.get("INTERNAL", 0) + tally.codes.get("UNKNOWN", 0)
    errors, first_record = [], ""
    for log in logs:
        log.seek(0)
        text = log.read()
        errors += error_lines(text)
        first_record = first_record or first_error_record(text)
    growth = [end / warm - 1 for end, warm in zip(rss_end or [], rss_warm) if end and warm]
    result = {
        "minutes": args.minutes,
        "clients": 2 * args.max_streams,
        "completed": tally.completed,
        "completed_wrong_length": tally.wrong_length,
        "by_code": dict(sorted(tally.codes.items())),
        "internal_errors": internal,
        "server_error_logs": len(errors),
        "replicas": args.replicas,
        "calls_served_by_replica": served,
        "rss_mb_start": [rounded(r, 1) for r in rss_start],
        "rss_mb_warm": [rounded(r, 1) for r in rss_warm],
        "rss_mb_end": None if rss_end is None else [rounded(r, 1) for r in rss_end],
        "rss_growth_after_warmup": rounded(max(growth), 3) if growth else None,  # the largest of any replica
        "active_after": active_after,
        "server_alive_at_end": alive,
    }
    print(f"soak: {args.minutes:g} min, {2 * args.max_streams} clients, {args.replicas} replica(s) with --max-streams "
          f"{args.max_streams}, model {args.model}")
    for key, value in result.items():
        print(f"{key:<26} {value}")
    for wrong in tally.wrong[:5]:
        print(f"  wrong length: {wrong}")
    for line, count in Counter(errors).most_common(5):
        print(f"  {count} x {line[:160]}")
    if first_record:
        print(f"the first of them, whole:\n{first_record}")
    print(json.dumps(result))
    return 0 if alive and internal == 0 and not errors and tally.wrong_length == 0 and active_after == 0 else 1


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def first_error_record(log: str) -> str:
    """The first ERROR or CRITICAL record of a server log with the lines that follow it (its traceback); "" if none."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if error_lines(line):
            rest = itertools.takewhile(lambda more: not re.match(r"\d{4}-\d\d-\d\d ", more), lines[i + 1 :])
            return "\n".join([line, *rest])
    return ""


def error_lines(log: str) -> list[str]:
    """The server log's ERROR and CRITICAL records ("DATE TIME LEVEL LOGGER MESSAGE"), without date and time."""
    return [line.split(" ", 2)[2] for line in log.splitlines()
            if len(line.split(" ", 3)) > 3 and line.split(" ", 3)[2] in ("ERROR", "CRITICAL")]


if __name__ == "__main__":
    raise SystemExit(main())
