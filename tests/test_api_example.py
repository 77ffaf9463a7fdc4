"""docs/examples/generate.mjs, the Node.js example of the wire protocol, against a real loopback server."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.serving import LIMITS, RunningServer
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "generate.mjs"
NODE = shutil.which("node")
TOKEN = "example-token"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def run_example(address: str, out: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WAVENET_TOKEN"}
    if token is not None:
        env["WAVENET_TOKEN"] = token
    assert NODE is not None
    return subprocess.run([NODE, str(EXAMPLE), address, str(out), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def stub_audio(address: str, seconds: float, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    """What the Python stub gets for the request the example sends."""
    with grpc.insecure_channel(address) as channel:
        request = pb.GenerateRequest(seconds=seconds, seed=1, encoding=pb.PCM16)
        chunks = list(pb_grpc.WaveNetStub(channel).Generate(request, metadata=metadata, timeout=60))
    assert chunks and all(c.encoding == pb.PCM16 for c in chunks)
    return b"".join(c.audio for c in chunks)


@pytest.mark.parametrize("args, seconds", [((), 1.0), (("2.5",), 2.5), (("0.01",), 0.01)])
def test_example_writes_the_same_audio_as_the_python_stub(server: RunningServer, tmp_path: Path,
                                                          args: tuple[str, ...], seconds: float) -> None:
    out = tmp_path / "out.raw"
    result = run_example(server.address, out, *args)
    assert result.returncode == 0, result.stderr
    samples = round(seconds * 1600)  # the tiny model's rate; default chunks of 100 ms: 1, 10 and 25 chunks
    expected = stub_audio(server.address, seconds)
    assert len(expected) == 2 * samples
    assert out.read_bytes() == expected
    assert result.stdout.startswith(f"wrote {samples} samples to {out} (seed 1, real-time factor ")
    assert result.stdout.count("\n") == 1 and result.stderr == ""


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "21"])
def test_example_reports_a_bad_request(server: RunningServer, tmp_path: Path, seconds: str) -> None:
    out = tmp_path / "out.raw"
    result = run_example(server.address, out, seconds)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: INVALID_ARGUMENT: ") and "seconds" in result.stderr
    assert not out.exists()


def test_example_reports_an_unreachable_server(tmp_path: Path) -> None:
    result = run_example("127.0.0.1:1", tmp_path / "out.raw")
    assert result.returncode == 1 and result.stderr.startswith("error: ")


@pytest.fixture(scope="module")
def token_server(model_path: Path) -> Iterator[RunningServer]:
    running = RunningServer([f"tiny={model_path}"], 2, LIMITS, tokens=frozenset({TOKEN}))
    yield running
    running.stop()


def test_example_sends_the_token(token_server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    refused = run_example(token_server.address, out, "0.5")
    assert refused.returncode == 1 and refused.stderr.startswith("error: UNAUTHENTICATED: authorization: ")
    wrong = run_example(token_server.address, out, "0.5", token="wrong")
    assert wrong.returncode == 1 and "UNAUTHENTICATED" in wrong.stderr and not out.exists()
    allowed = run_example(token_server.address, out, "0.5", token=TOKEN)
    assert allowed.returncode == 0, allowed.stderr
    assert out.read_bytes() == stub_audio(token_server.address, 0.5, (("authorization", f"Bearer {TOKEN}"),))


@pytest.mark.parametrize("channels, rate", [(1, 1600), (2, 8000)])
def test_example_vocodes_a_wav_as_the_client_frames_path_does(server: RunningServer, tmp_path: Path,
                                                              channels: int, rate: int) -> None:
    """The same recording re-voiced two ways with the same seed: sent as audio by hand-built protobuf (the server
    computes the frames), and as frames the Python client computed (wavenet.audio.recording_frames): the same
    frames, so the same audio, sample for sample."""
    import numpy as np
    import soundfile as sf

    from tests.tiny import TINY_MEL
    from wavenet.audio import recording_frames

    t = np.arange(int(0.7 * rate)) / rate
    recording = np.stack([0.3 * np.sin(2 * np.pi * 150 * t) * (1 + k) / 2 for k in range(channels)], axis=1)
    src, out = tmp_path / "in.wav", tmp_path / "out.raw"
    sf.write(src, recording, rate, subtype="PCM_16")
    result = run_example(server.address, out, "--vocode", str(src))
    assert result.returncode == 0, result.stderr
    frames = recording_frames(sf.read(src, always_2d=True)[0], rate, TINY_MEL)
    with grpc.insecure_channel(server.address) as channel:
        requests = [pb.SynthesizeRequest(config=pb.GenerateRequest(seed=1, encoding=pb.PCM16)),
                    pb.SynthesizeRequest(frames=pb.FeatureFrames(values=frames.ravel().tolist(),
                                                                 num_frames=len(frames))),
                    pb.SynthesizeRequest(end=pb.EndOfInput())]
        chunks = list(pb_grpc.WaveNetStub(channel).Synthesize(iter(requests), timeout=60))
    expected = b"".join(c.audio for c in chunks)
    assert len(expected) == 2 * len(frames) * TINY_MEL.hop > 0
    assert out.read_bytes() == expected


def test_example_reports_a_wav_it_cannot_read(server: RunningServer, tmp_path: Path) -> None:
    src = tmp_path / "in.wav"
    src.write_bytes(b"not a wav at all")
    result = run_example(server.address, tmp_path / "out.raw", "--vocode", str(src))
    assert result.returncode == 1 and result.stderr == f"error: {src}: not a WAV file\n"
