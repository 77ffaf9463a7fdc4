"""A caller's pitch through the contract: ListModels says which models take it, frames carry it, bad values are
refused naming the field, and the audio follows it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from client.api import Pitched, WaveNetClient
from models import pitch
from models.wavenet import save_checkpoint
from tests.serving import LIMITS, MAX_STREAMS, RunningServer
from tests.tiny import TINY_MEL, random_frames, tiny_model
from wavenet.codec import decode_audio
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

MELS, HOP = TINY_MEL.n_mels, TINY_MEL.hop
FRAMES = random_frames(30, MELS)
F0 = np.where(np.arange(30) % 10 < 7, 110.0 + 4 * np.arange(30), 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder: Path = tmp_path_factory.mktemp("pitch-models")
    save_checkpoint(folder / "pitched.pt", tiny_model("pitch"), {"speakers": ["a", "b"]})
    save_checkpoint(folder / "plain.pt", tiny_model("both"), {"speakers": ["a", "b"]})
    running = RunningServer([f"pitched={folder / 'pitched.pt'}", f"plain={folder / 'plain.pt'}"], MAX_STREAMS,
                            LIMITS)
    yield running
    running.stop()  # the `stub` fixture (tests/serving.py) talks to this module's server


def frames_msg(frames: np.ndarray, f0: np.ndarray | None = None,
               periodicity: np.ndarray | None = None) -> pb.FeatureFrames:
    message = pb.FeatureFrames(values=frames.ravel().tolist(), num_frames=len(frames))
    if f0 is not None:
        message.f0_hz.extend(f0.tolist())
    if periodicity is not None:
        message.periodicity.extend(periodicity.tolist())
    return message


def synthesize(stub: pb_grpc.WaveNetStub, blocks: list[pb.FeatureFrames], model: str = "pitched") -> np.ndarray:
    config = pb.GenerateRequest(model=model, seed=3, encoding=pb.FLOAT32, chunk_samples=40)
    messages = [pb.SynthesizeRequest(config=config)] + [pb.SynthesizeRequest(frames=b) for b in blocks]
    chunks = list(stub.Synthesize(iter(messages + [pb.SynthesizeRequest(end=pb.EndOfInput())]), timeout=30))
    return np.concatenate([decode_audio(c.audio, c.encoding, "audio") for c in chunks])


def test_list_models_says_which_models_take_pitch(stub: pb_grpc.WaveNetStub) -> None:
    models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert models["pitched"].HasField("pitch") and not models["plain"].HasField("pitch")
    spec = models["pitched"].pitch
    assert (spec.f0_min_hz, spec.f0_max_hz) == (pitch.F0_MIN, pitch.F0_MAX) and "Praat" in spec.description


def test_the_audio_follows_the_callers_pitch_however_the_frames_arrive(stub: pb_grpc.WaveNetStub) -> None:
    whole = synthesize(stub, [frames_msg(FRAMES, F0)])
    assert len(whole) == len(FRAMES) * HOP
    pieces = [frames_msg(FRAMES[i : i + 4], F0[i : i + 4]) for i in range(0, len(FRAMES), 4)]
    assert np.array_equal(synthesize(stub, pieces), whole)
    assert not np.array_equal(synthesize(stub, [frames_msg(FRAMES)]), whole)  # predicted pitch: other audio
    with_voicing = synthesize(stub, [frames_msg(FRAMES, F0, np.full(30, 0.2, np.float32))])
    assert not np.array_equal(with_voicing, whole)
    request = pb.GenerateRequest(model="pitched", seed=3, encoding=pb.FLOAT32, chunk_samples=40,
                                 features=frames_msg(FRAMES, F0))
    generated = np.concatenate([decode_audio(c.audio, c.encoding, "audio") for c in stub.Generate(request)])
    assert np.array_equal(generated, whole)  # features given whole carry it too


BAD = [
    ("a model without pitch input", "plain", frames_msg(FRAMES, F0), "frames.f0_hz"),
    ("too few values", "pitched", frames_msg(FRAMES, F0[:-1]), "frames.f0_hz"),
    ("NaN", "pitched", frames_msg(FRAMES, np.where(np.arange(30) == 4, np.nan, F0)), "frames.f0_hz"),
    ("under the range", "pitched", frames_msg(FRAMES, np.where(np.arange(30) == 4, 30.0, F0)), "frames.f0_hz"),
    ("over the range", "pitched", frames_msg(FRAMES, np.where(np.arange(30) == 4, 900.0, F0)), "frames.f0_hz"),
    ("negative", "pitched", frames_msg(FRAMES, np.where(np.arange(30) == 4, -120.0, F0)), "frames.f0_hz"),
    ("periodicity without F0", "pitched", frames_msg(FRAMES, None, np.full(30, 0.5)), "frames.f0_hz"),
    ("periodicity too short", "pitched", frames_msg(FRAMES, F0, np.full(29, 0.5)), "frames.periodicity"),
    ("periodicity over 1", "pitched", frames_msg(FRAMES, F0, np.full(30, 1.5)), "frames.periodicity"),
]


@pytest.mark.parametrize("name, model, message, field", BAD, ids=[b[0] for b in BAD])
def test_bad_pitch_gets_invalid_argument_naming_the_field(stub: pb_grpc.WaveNetStub, name: str, model: str,
                                                          message: pb.FeatureFrames, field: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        synthesize(stub, [message], model)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert (error.value.details() or "").startswith(field + ":"), error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Generate(pb.GenerateRequest(model=model, features=message), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("features." + field.split(".")[1])
    assert len(synthesize(stub, [frames_msg(FRAMES, F0)])) == len(FRAMES) * HOP  # still serving


def test_the_client_library_sends_a_callers_pitch(server: RunningServer, stub: pb_grpc.WaveNetStub) -> None:
    expected = synthesize(stub, [frames_msg(FRAMES, F0)])
    blocks = [Pitched(FRAMES[:11], F0[:11]), Pitched(FRAMES[11:], F0[11:])]
    with WaveNetClient(server.address, max_message_bytes=200) as client:  # small messages: blocks are split
        chunks = list(client.synthesize(iter(blocks), model="pitched", seed=3, chunk_samples=40))
        assert np.array_equal(np.concatenate([c.audio for c in chunks]), expected)
        with pytest.raises(ValueError, match="f0_hz: 10 values for 11 frames"):
            list(client.synthesize(iter([Pitched(FRAMES[:11], F0[:10])]), model="pitched"))
