"""Proto <-> array conversion shared by the server and the client (numpy only, no torch)."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np

from wavenet import mulaw
from wavenet.features import MelSpec
from wavenet.v1 import wavenet_pb2 as pb

Encoding: TypeAlias = pb.AudioEncoding
ENCODINGS: dict[int, Encoding] = {  # what each request value means
    pb.AUDIO_ENCODING_UNSPECIFIED: pb.PCM16, pb.PCM16: pb.PCM16, pb.FLOAT32: pb.FLOAT32, pb.MULAW8: pb.MULAW8}

BYTES_PER_SAMPLE: dict[Encoding, int] = {pb.PCM16: 2, pb.FLOAT32: 4, pb.MULAW8: 1}


class InvalidField(ValueError):
    """A request field that cannot be served; the message names the field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


def feature_spec(mel: MelSpec, lookahead: int) -> pb.FeatureSpec:
    return pb.FeatureSpec(channels=mel.n_mels, hop=mel.hop, lookahead_frames=lookahead, sample_rate=mel.sample_rate,
                          window=mel.win, fft_size=mel.n_fft, fmin=mel.fmin, fmax=mel.fmax,
                          description=mel.describe())


def mel_spec(spec: pb.FeatureSpec) -> MelSpec:
    """The client's side of feature_spec: the MelSpec to compute frames with."""
    return MelSpec(sample_rate=spec.sample_rate, n_mels=spec.channels, hop=spec.hop, win=spec.window,
                   n_fft=spec.fft_size, fmin=spec.fmin, fmax=spec.fmax)


def encoding_of(value: int, field: str) -> Encoding:
    if value not in ENCODINGS:
        raise InvalidField(field, f"unknown audio encoding {value}")
    return ENCODINGS[value]


def encode_audio(audio: np.ndarray, encoding: Encoding) -> bytes:
    """Float32 audio in [-1, 1] to headerless audio bytes."""
    if encoding == pb.MULAW8:
        return mulaw.encode(audio).astype(np.uint8).tobytes()
    if encoding == pb.FLOAT32:
        return audio.astype("<f4").tobytes()
    return np.round(audio * 32767.0).astype("<i2").tobytes()


def decode_audio(data: bytes, encoding: Encoding, field: str) -> np.ndarray:
    """Headerless audio bytes to float32 samples in [-1, 1]."""
    width = BYTES_PER_SAMPLE[encoding]
    if len(data) % width:
        raise InvalidField(field, f"{len(data)} bytes is not a whole number of {width}-byte samples")
    if encoding == pb.MULAW8:
        return mulaw.decode(np.frombuffer(data, np.uint8))
    if encoding == pb.FLOAT32:
        audio = np.frombuffer(data, "<f4").astype(np.float32)
        if not np.all(np.isfinite(audio)) or np.abs(audio).max(initial=0) > 1.0:
            raise InvalidField(field, "FLOAT32 samples must be finite and within [-1, 1]")
        return audio
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def frames_of(message: pb.FeatureFrames, mel: MelSpec | None, limit: int, field: str) -> np.ndarray:
    """(num_frames, channels) float32 frames, checked for shape and finiteness."""
    if mel is None:
        raise InvalidField(field, "this model takes no features")
    values = np.asarray(message.values, np.float32)
    if message.num_frames == 0:
        raise InvalidField(f"{field}.num_frames", "must be > 0")
    if message.num_frames > limit:
        raise InvalidField(f"{field}.num_frames", f"{message.num_frames} exceeds the limit of {limit}")
    if len(values) != message.num_frames * mel.n_mels:
        raise InvalidField(f"{field}.values", f"{len(values)} values is not num_frames ({message.num_frames}) x "
                                               f"channels ({mel.n_mels})")
    if not np.all(np.isfinite(values)):
        raise InvalidField(f"{field}.values", "must be finite (no NaN or inf)")
    return values.reshape(message.num_frames, mel.n_mels)
