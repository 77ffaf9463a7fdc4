"""One client, several replicas on loopback: calls spread round-robin over every address, and a call a full replica
refuses is served by another without the caller seeing an error."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from client.api import SERVICE_CONFIG, WaveNetClient, channel_target
from tests.serving import LIMITS, RunningServer, wait_for
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent.parent


def served(server: RunningServer, code: str = "OK") -> float:
    return server.metrics.registry.get_sample_value("wavenet_requests_total",
                                                    {"method": "Generate", "code": code}) or 0.0


@pytest.fixture
def replicas(model_path: Path, request: pytest.FixtureRequest) -> Iterator[list[RunningServer]]:
    streams = getattr(request, "param", [6, 6, 6])
    running = [RunningServer([f"tiny={model_path}"], n, LIMITS) for n in streams]
    yield running
    for server in running:
        server.stop()


def test_calls_spread_over_every_replica(replicas: list[RunningServer]) -> None:
    target = ",".join(s.address for s in replicas)
    with WaveNetClient(target) as client, ThreadPoolExecutor(12) as pool:
        for _ in range(6):  # round_robin picks among connected replicas: let every connection come up first
            client.models()
        lengths = list(pool.map(lambda seed: sum(len(c.audio) for c in client.generate(samples=400, seed=seed)),
                                range(12)))
    assert lengths == [400] * 12
    wait_for(lambda: sum(served(s) for s in replicas) == 12)  # counted just after each caller hears its summary
    assert all(served(s) >= 2 for s in replicas), [served(s) for s in replicas]


@pytest.mark.parametrize("replicas", [[1, 4, 4]], indirect=True)
def test_a_call_a_full_replica_refuses_is_served_by_another(replicas: list[RunningServer]) -> None:
    full = replicas[0]
    release = threading.Event()

    def hold() -> Iterator[pb.SynthesizeRequest]:  # a live stream that takes the full replica's only slot
        yield pb.SynthesizeRequest(config=pb.GenerateRequest())
        release.wait(30)

    with grpc.insecure_channel(full.address) as channel:
        held = pb_grpc.WaveNetStub(channel).Synthesize(hold(), timeout=60)
        wait_for(lambda: full.models["tiny"].scheduler.active == 1)
        target = ",".join(s.address for s in replicas)
        with WaveNetClient(target) as client:
            audio = [np.concatenate([c.audio for c in client.generate(samples=300, seed=k)]) for k in range(9)]
        release.set()
        held.cancel()
    assert [len(a) for a in audio] == [300] * 9  # no caller saw the refusal
    assert served(full, "RESOURCE_EXHAUSTED") >= 1  # round_robin did send calls to the full replica
    assert served(full) == 0 and sum(served(s) for s in replicas[1:]) == 9


def test_several_addresses_become_one_resolved_target_and_a_bad_one_is_named() -> None:
    assert channel_target("localhost:50051") == "localhost:50051"
    assert channel_target("dns:///wavenet:50051") == "dns:///wavenet:50051"
    assert channel_target("127.0.0.1:1,127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("[::1]:7,[::1]:8") == "ipv6:[::1]:7,[::1]:8"
    with pytest.raises(ValueError, match="'nohost' is not host:port"):
        channel_target("127.0.0.1:1,nohost")
    with pytest.raises(ValueError, match="mixes IPv4 and IPv6"):
        channel_target("127.0.0.1:1,[::1]:2")


def test_docs_give_other_languages_the_same_service_config() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    block = text.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == SERVICE_CONFIG


def test_the_cli_takes_several_servers_and_names_a_bad_address(replicas: list[RunningServer], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from client.cli import main

    target = ",".join(s.address for s in replicas)
    for k in range(3):  # each a new channel: round_robin starts anywhere, so only the count is certain
        out = tmp_path / f"{k}.wav"
        assert main(["--server", target, "--quiet", "generate", "--seconds", "0.1", "-o", str(out)]) == 0
    wait_for(lambda: sum(served(s) for s in replicas) == 3)
    bad = ["--server", "127.0.0.1:1,localhost", "generate", "--seconds", "0.1", "-o", str(tmp_path / "x.wav")]
    assert main(bad) == 2
    assert capsys.readouterr().err.strip() == "wavenet-client: server: 'localhost' is not host:port"


def test_a_stream_outlives_the_servers_connection_age(model_path: Path) -> None:
    aged = RunningServer([f"tiny={model_path}"], 4, LIMITS, max_connection_age=0.3)
    try:
        with WaveNetClient(aged.address) as client:
            frames = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)

            def paced() -> Iterator[np.ndarray]:  # 0.8 s of input: past the age, on one connection
                for i in range(0, 40, 4):
                    threading.Event().wait(0.08)
                    yield frames[i : i + 4]

            audio = np.concatenate([c.audio for c in client.synthesize(paced(), seed=1)])
            assert len(audio) == 40 * 4  # whole: the age asked the client to reconnect, and cut nothing
            assert sum(len(c.audio) for c in client.generate(samples=100)) == 100  # and the next call reconnects
    finally:
        aged.stop()


def test_a_replica_drained_mid_run_loses_nothing_and_new_calls_go_to_the_others(model_path: Path) -> None:
    replicas = [RunningServer([f"tiny={model_path}"], 6, LIMITS, grace=0.5) for _ in range(3)]
    leaving = replicas[0]
    try:
        target = ",".join(s.address for s in replicas)
        with WaveNetClient(target) as client:
            def call(seed: int) -> tuple[int, str]:
                try:
                    return sum(len(c.audio) for c in client.generate(samples=3000, seed=seed)), "OK"
                except grpc.RpcError as error:
                    return -1, error.code().name if isinstance(error, grpc.Call) else "?"

            with ThreadPoolExecutor(9) as pool:
                first = [pool.submit(call, seed) for seed in range(9)]
                wait_for(lambda: leaving.models["tiny"].scheduler.active > 0)
                threading.Thread(target=leaving.stop).start()  # SIGTERM's path: refuse new calls, drain, stop
                wait_for(lambda: leaving.models["tiny"].scheduler.active == 0)
                after = [call(100 + seed) for seed in range(6)]  # while and after it drains: the others serve
                outcomes = [f.result() for f in first]
        # every stream either finished whole or (cut by the drain's end) said UNAVAILABLE; nothing else failed
        assert all(n == 3000 or (n == -1 and code == "UNAVAILABLE") for n, code in outcomes), outcomes
        assert after == [(3000, "OK")] * 6
    finally:
        for server in replicas[1:]:
            server.stop()
