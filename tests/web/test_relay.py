"""wavenet-web's WebSocket relay without a browser: audio relayed exactly, errors named, a closed socket ends the
gRPC call (no stream left running on the server)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from starlette.testclient import TestClient

from client.web.app import Upstream, build_app
from tests.serving import RunningServer, wait_for
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc


@pytest.fixture
def client(server: RunningServer) -> Iterator[TestClient]:
    with TestClient(build_app(Upstream(server.address))) as test_client:
        yield test_client


def relayed(client: TestClient, request: dict[str, object], audio: bytes | None = None) -> tuple[bytes, dict]:
    parts = []
    with client.websocket_connect("/ws") as ws:
        ws.send_text(json.dumps(request))
        if audio is not None:
            ws.send_bytes(audio)
            ws.send_text(json.dumps({"end": True}))
        while True:
            message = ws.receive()
            if message.get("bytes") is not None:
                parts.append(message["bytes"])
            else:
                return b"".join(parts), json.loads(message["text"])


def test_models_are_listed_as_json(client: TestClient) -> None:
    body = client.get("/api/models").json()
    assert [m["name"] for m in body["models"]] == ["tiny"] and body["models"][0]["speakers"] == ["alice", "bob"]


def test_the_page_and_its_files_are_served_from_here(client: TestClient) -> None:
    page = client.get("/").text
    assert "static/app.js" in page and "http" not in page.replace("http-equiv", "")  # nothing from elsewhere
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


def test_generate_is_relayed_sample_for_sample(client: TestClient, server: RunningServer) -> None:
    audio, summary = relayed(client, {"method": "generate", "seconds": 0.5, "seed": 4, "speaker": 1})
    assert summary["type"] == "summary" and summary["samples"] == 800 and summary["seed"] == "4"
    with grpc.insecure_channel(server.address) as channel:
        chunks = pb_grpc.WaveNetStub(channel).Generate(
            pb.GenerateRequest(seconds=0.5, seed=4, speaker=1, encoding=pb.FLOAT32), timeout=30)
        assert audio == b"".join(c.audio for c in chunks)


def test_vocode_relays_the_recording_as_audio(client: TestClient) -> None:
    recording = (0.2 * np.sin(np.arange(1600) / 5)).astype("<f4")  # 1 s at the tiny model's 1,600 Hz
    audio, summary = relayed(client, {"method": "vocode", "sample_rate": 1600, "channels": 1, "seed": 1},
                             recording.tobytes())
    assert summary["type"] == "summary" and len(audio) == 4 * 1600


@pytest.mark.parametrize("request_, field", [
    ({"method": "generate", "seconds": 99}, "seconds"),
    ({"method": "generate", "seconds": 1, "speaker": 5}, "speaker"),
    ({"method": "sing"}, "method"),
    ({"method": "generate", "seconds": 1, "seed": "x"}, "seed"),
])
def test_bad_requests_come_back_as_errors_naming_the_field(client: TestClient, request_: dict, field: str) -> None:
    audio, answer = relayed(client, request_)
    assert audio == b"" and answer["type"] == "error" and answer["code"] == "INVALID_ARGUMENT"
    assert field in answer["message"]


def test_a_closed_socket_ends_the_grpc_call(client: TestClient, server: RunningServer) -> None:
    scheduler = server.models["tiny"].scheduler
    with client.websocket_connect("/ws") as ws:
        ws.send_text(json.dumps({"method": "generate", "seconds": 19, "seed": 1}))
        assert ws.receive()["bytes"]  # audio is flowing
        assert scheduler.active == 1
    wait_for(lambda: scheduler.active == 0, 10)  # the server freed the stream


def test_a_closed_socket_ends_a_vocode_call(client: TestClient, server: RunningServer) -> None:
    scheduler = server.models["tiny"].scheduler
    with client.websocket_connect("/ws") as ws:
        ws.send_text(json.dumps({"method": "vocode", "sample_rate": 1600, "channels": 1, "loudness": "AS_SENT"}))
        ws.send_bytes(np.zeros(1600, "<f4").tobytes())
        wait_for(lambda: scheduler.active == 1, 10)
    wait_for(lambda: scheduler.active == 0, 10)
