"""Synthesize's recorded-audio input: frames made by the server as training made them, streamed or whole, and
every bad message answered INVALID_ARGUMENT naming its field."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from server.audio_in import AudioFramer
from tests.serving import RunningServer
from tests.tiny import TINY_MEL
from wavenet.audio import quantise, recording_frames
from wavenet.codec import InvalidField
from wavenet.features import MelSpec, log_mel
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

SPEC = MelSpec()  # the shipped model's framing: 16 kHz, hop 200, window 800, FFT 1024


def speech_like(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.2 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.normal(size=len(t))
    return np.stack([mono * (1 + 0.3 * k) for k in range(channels)], axis=1)


def pcm16(audio: np.ndarray) -> bytes:
    return quantise(audio).astype("<i2").tobytes()


def messages(audio: np.ndarray, rate: int, loudness: pb.Loudness, sizes: Iterator[int]) -> list[pb.RecordedAudio]:
    out, i = [], 0
    while i < len(audio):
        n = next(sizes)
        out.append(pb.RecordedAudio(encoding=pb.PCM16, sample_rate=rate, channels=audio.shape[1], loudness=loudness,
                                    data=pcm16(audio[i : i + n])))
        i += n
    return out


def framed(spec: MelSpec, msgs: list[pb.RecordedAudio]) -> np.ndarray:
    framer = AudioFramer(spec, msgs[0], limit=10**6)
    parts = [framer.add(m) for m in msgs]
    return np.concatenate([*parts, framer.end()])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_as_sent_frames_stream_bit_for_bit_the_whole_signals(seed: int) -> None:
    """At the model's rate, messages of any sizes give exactly log_mel of the whole 16-bit signal."""
    audio = speech_like(1.3, SPEC.sample_rate, seed=seed)
    rng = np.random.default_rng(seed)
    msgs = messages(audio, SPEC.sample_rate, pb.AS_SENT, iter(lambda: int(rng.integers(1, 1500)), None))
    whole = log_mel(quantise(audio[:, 0]) / 32768.0, SPEC)
    got = framed(SPEC, msgs)
    assert got.shape == whole.shape and np.array_equal(got, whole)


def test_as_sent_frames_come_as_the_audio_arrives() -> None:
    """Each frame is out as soon as the audio half an FFT past its centre is in: bounded lookahead, not the end."""
    audio = speech_like(1.0, SPEC.sample_rate)
    framer = AudioFramer(SPEC, messages(audio, SPEC.sample_rate, pb.AS_SENT, iter(lambda: 200, None))[0], 10**6)
    made = 0
    for k, msg in enumerate(messages(audio, SPEC.sample_rate, pb.AS_SENT, iter(lambda: 200, None))):
        made += len(framer.add(msg))
        received = 200 * (k + 1)
        assert made == max(0, (received - SPEC.hop // 2 - SPEC.n_fft // 2) // SPEC.hop + 1)
    assert made + len(framer.end()) == len(audio) // SPEC.hop


def test_as_sent_resamples_a_stream_at_another_rate() -> None:
    audio = speech_like(1.0, 44100, channels=2)
    msgs = messages(audio, 44100, pb.AS_SENT, iter(lambda: 4410, None))
    frames = framed(SPEC, msgs)
    reference = recording_frames(quantise(audio) / 32768.0, 44100, SPEC)  # resampled whole, not streamed
    assert len(frames) == SPEC.sample_rate // SPEC.hop  # 1 s of frames
    level = np.mean(frames[5:-5]) - np.mean(reference[5:-5])  # AS_SENT keeps the level sent; shapes agree
    assert np.max(np.abs(frames[5:-5] - reference[5:-5] - level)) < 0.5


def test_normalised_is_the_client_libraries_frames_path() -> None:
    audio = speech_like(0.9, 22050, channels=2) * 0.1  # quiet: normalising scales it up
    msgs = messages(audio, 22050, pb.NORMALISED, iter(lambda: 3000, None))
    framer = AudioFramer(SPEC, msgs[0], 10**6)
    assert all(len(framer.add(m)) == 0 for m in msgs)  # nothing before the end: the scale needs all of it
    assert np.array_equal(framer.end(), recording_frames(quantise(audio) / 32768.0, 22050, SPEC))


# --- over a real server ---------------------------------------------------------------------------------------

def synthesize(stub: pb_grpc.WaveNetStub, *inputs: pb.SynthesizeRequest, seed: int = 3) -> bytes:
    requests = [pb.SynthesizeRequest(config=pb.GenerateRequest(seed=seed, encoding=pb.PCM16)), *inputs,
                pb.SynthesizeRequest(end=pb.EndOfInput())]
    return b"".join(c.audio for c in stub.Synthesize(iter(requests), timeout=60))


def test_audio_in_gives_the_audio_of_its_frames(stub: pb_grpc.WaveNetStub) -> None:
    """Streamed audio at the model's rate, sent in uneven messages, vocodes exactly as its frames sent by the
    caller do (same seed)."""
    audio = speech_like(0.8, TINY_MEL.sample_rate)
    msgs = messages(audio, TINY_MEL.sample_rate, pb.AS_SENT, iter([37, 500, 3, 1000, 1000]))
    frames = log_mel(quantise(audio[:, 0]) / 32768.0, TINY_MEL)
    by_audio = synthesize(stub, *[pb.SynthesizeRequest(audio=m) for m in msgs])
    by_frames = synthesize(stub, pb.SynthesizeRequest(frames=pb.FeatureFrames(values=frames.ravel().tolist(),
                                                                               num_frames=len(frames))))
    assert len(by_audio) == 2 * len(frames) * TINY_MEL.hop and by_audio == by_frames


def bad(stub: pb_grpc.WaveNetStub, *inputs: pb.SynthesizeRequest) -> str:
    with pytest.raises(grpc.RpcError) as err:
        synthesize(stub, *inputs)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return err.value.details()


ONE = pb.RecordedAudio(sample_rate=1600, data=pcm16(np.zeros((400, 1))))


@pytest.mark.parametrize("message, field", [
    (pb.RecordedAudio(sample_rate=0, data=b"\0\0"), "audio.sample_rate"),
    (pb.RecordedAudio(sample_rate=500_000, data=b"\0\0"), "audio.sample_rate"),
    (pb.RecordedAudio(sample_rate=1600, channels=9, data=b"\0\0" * 9), "audio.channels"),
    (pb.RecordedAudio(sample_rate=1600, encoding=pb.MULAW8, data=b"\0"), "audio.encoding"),
    (pb.RecordedAudio(sample_rate=1600, data=b"\0\0\0"), "audio.data"),
    (pb.RecordedAudio(sample_rate=1600, channels=2, data=b"\0\0" * 3), "audio.data"),
    (pb.RecordedAudio(sample_rate=1600, encoding=pb.FLOAT32, data=np.array([0, np.nan], "<f4").tobytes()),
     "audio.data"),
    (pb.RecordedAudio(sample_rate=1600, data=b"\0\0" * 3), "audio"),  # shorter than one frame
    (pb.RecordedAudio(sample_rate=1600, data=pcm16(np.zeros((40_000, 1)))), "audio.data"),  # past --max-seconds
])
def test_bad_audio_is_invalid_argument_naming_its_field(stub: pb_grpc.WaveNetStub, message: pb.RecordedAudio,
                                                        field: str) -> None:
    assert bad(stub, pb.SynthesizeRequest(audio=message)).startswith(f"{field}: ")


def test_a_call_sends_frames_or_audio_not_both(stub: pb_grpc.WaveNetStub) -> None:
    frames = pb.FeatureFrames(values=[0.0] * (4 * TINY_MEL.n_mels), num_frames=4)
    assert bad(stub, pb.SynthesizeRequest(frames=frames), pb.SynthesizeRequest(audio=ONE)).startswith("audio: ")
    assert bad(stub, pb.SynthesizeRequest(audio=ONE), pb.SynthesizeRequest(frames=frames)).startswith("frames: ")


def test_the_format_may_not_change_within_a_call(stub: pb_grpc.WaveNetStub) -> None:
    other = pb.RecordedAudio(sample_rate=8000, data=ONE.data)
    assert "first audio message" in bad(stub, pb.SynthesizeRequest(audio=ONE), pb.SynthesizeRequest(audio=other))


def test_the_server_serves_on_after_bad_audio(server: RunningServer, stub: pb_grpc.WaveNetStub) -> None:
    bad(stub, pb.SynthesizeRequest(audio=pb.RecordedAudio(sample_rate=0)))
    assert len(synthesize(stub, pb.SynthesizeRequest(audio=ONE))) == 2 * 400
    with pytest.raises(InvalidField):  # the framer alone says the same
        AudioFramer(TINY_MEL, pb.RecordedAudio(sample_rate=0), 100)
