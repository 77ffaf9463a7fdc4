"""Validation and proto <-> array conversion: small pure functions, no gRPC context, no generation."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from models import emphasis, pitch
from models.generate.reference import StreamConfig, frames_cover_prime
from models.wavenet import TEMPERATURE, WaveNetConfig, lookahead_frames, pitch_inputs, receptive_field
from server.settings import DEFAULT_CHUNK_SECONDS, MIN_CHUNK_SECONDS, Limits
from wavenet.codec import (
    BYTES_PER_SAMPLE,
    Encoding,
    InvalidField,
    decode_audio,
    encoding_of,
    feature_spec,
    frames_of,
)
from wavenet.features import MelSpec
from wavenet.v1 import wavenet_pb2 as pb


@dataclass(frozen=True)
class Request:
    """A validated request, in the generator's terms."""

    stream: StreamConfig
    prime: np.ndarray | None  # classes
    prime_last: float  # the prime's last sample (0.0 without one): where the output filter starts
    frames: np.ndarray | None  # (n, channels), given whole
    pitch: np.ndarray | None  # (n, 2) F0 and periodicity the caller gave with them (NaN where not), or None
    encoding: Encoding
    chunk_samples: int


@dataclass(frozen=True)
class Garbled:
    """Bytes that do not parse as the method's request message, handed to the handler in its place so that they are
    answered INVALID_ARGUMENT (gRPC itself would fail the call as UNKNOWN or INTERNAL, with a traceback)."""

    message_type: str

    def problem(self, which: str = "") -> str:
        return f"{which}not a valid {self.message_type} message (its wire format is corrupt)"


def lenient(message_class: Any) -> Callable[[bytes], Any]:
    """A request deserializer that answers bytes it cannot parse with Garbled rather than an exception."""
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return Garbled(message_class.DESCRIPTOR.full_name)
    return parse


def model_info(name: str, cfg: WaveNetConfig, speakers: list[str], temperature: float) -> pb.ModelInfo:
    """What ListModels says about one model; temperature: the one a request that names none is sampled at."""
    info = pb.ModelInfo(
        name=name,
        sample_rate=cfg.sample_rate,
        classes=cfg.classes,
        receptive_field=receptive_field(cfg),
        speakers=speakers,
        free_running=True,
        default_temperature=temperature,
    )
    if cfg.mel is not None:
        info.features.CopyFrom(feature_spec(cfg.mel, lookahead_frames(cfg)))
    if takes_pitch(cfg):
        info.pitch.CopyFrom(pb.PitchSpec(f0_min_hz=pitch.F0_MIN, f0_max_hz=pitch.F0_MAX, description=PITCH_DESCRIPTION))
    return info


PITCH_DESCRIPTION = (f"f0_hz at sample i x hop as Praat's autocorrelation tracker (to_pitch_ac, {pitch.F0_MIN:g}-"
                     f"{pitch.F0_MAX:g} Hz) measures it, 0 where it finds no pitch; periodicity its strength there; "
                     "an unvoiced frame holds the last voiced F0, as in training")


def takes_pitch(cfg: WaveNetConfig) -> bool:
    return cfg.mel is not None and pitch_inputs(cfg) > 0


def pitch_of(message: pb.FeatureFrames, cfg: WaveNetConfig, field: str) -> np.ndarray | None:
    """The (num_frames, 2) float32 F0 and periodicity a FeatureFrames message gives (NaN periodicity where only F0
    is given), or None when it gives neither; checked against the model and the message's frames."""
    if not message.f0_hz and not message.periodicity:
        return None
    if not takes_pitch(cfg):
        raise InvalidField(f"{field}.f0_hz", "this model takes no pitch input (its ModelInfo has no pitch)")
    if not message.f0_hz:
        raise InvalidField(f"{field}.f0_hz", "periodicity comes only with f0_hz: give both, or f0_hz alone")
    if len(message.f0_hz) != message.num_frames:
        raise InvalidField(f"{field}.f0_hz", f"{len(message.f0_hz)} values for {message.num_frames} frames: give "
                                              "one per frame")
    f0 = np.asarray(message.f0_hz, np.float32)
    voiced = f0 != 0
    if not np.all(np.isfinite(f0)) or np.any(voiced & ((f0 < pitch.F0_MIN) | (f0 > pitch.F0_MAX))):
        bad = f0[~np.isfinite(f0) | (voiced & ((f0 < pitch.F0_MIN) | (f0 > pitch.F0_MAX)))][0]
        raise InvalidField(f"{field}.f0_hz", f"{bad:g} is neither 0 (unvoiced) nor within [{pitch.F0_MIN:g}, "
                                              f"{pitch.F0_MAX:g}] Hz")
    periodicity = np.full(len(f0), np.nan, np.float32)
    if message.periodicity:
        if len(message.periodicity) != message.num_frames:
            raise InvalidField(f"{field}.periodicity", f"{len(message.periodicity)} values for "
                                                        f"{message.num_frames} frames: give one per frame, or none")
        periodicity = np.asarray(message.periodicity, np.float32)
        if not np.all(np.isfinite(periodicity) & (periodicity >= 0) & (periodicity <= 1)):
            raise InvalidField(f"{field}.periodicity", "must be within [0, 1]")
    return np.stack([f0, periodicity], axis=1)


def length_in_samples(request: pb.GenerateRequest, sample_rate: int, limits: Limits, prefix: str) -> int | None:
    """The requested length in samples, or None when not given; prefix: "" or the enclosing field and a dot."""
    which = request.WhichOneof("length")
    if which is None:
        return None
    if which == "seconds":
        # the float32 field as the decimal it was written as (256.002, not 256.00201416): at 48 kHz the raw value
        # was one sample long, and 0.1 s was over a 0.1 s limit
        seconds = float(str(np.float32(request.seconds)))
        if not math.isfinite(seconds) or seconds <= 0:
            raise InvalidField(f"{prefix}seconds", f"must be a positive number, got {seconds}")
        if seconds > limits.max_seconds:
            raise InvalidField(f"{prefix}seconds", f"{seconds:g} exceeds the limit of {limits.max_seconds:g} s")
        return max(1, round(seconds * sample_rate))
    samples = request.samples
    if samples == 0:
        raise InvalidField(f"{prefix}samples", "must be > 0")
    if samples > limits.max_seconds * sample_rate:
        raise InvalidField(f"{prefix}samples", f"{samples} exceeds the limit of {limits.max_seconds:g} s")
    return samples


def frame_limit(limits: Limits, mel: MelSpec | None) -> int:
    """Feature frames one call may send: --max-frames, and no more than --max-seconds of audio."""
    if mel is None:
        return limits.max_frames
    return min(limits.max_frames, int(limits.max_seconds * mel.sample_rate) // mel.hop)


CHUNK_OVERHEAD_BYTES = 256  # an AudioChunk's fields besides the audio, the summary included, with room to spare


def chunk_samples(request: pb.GenerateRequest, sample_rate: int, limits: Limits, encoding: Encoding,
                  field: str) -> int:
    """Samples per AudioChunk: the request's (within the limits) or the default."""
    chunk = request.chunk_samples or round(DEFAULT_CHUNK_SECONDS * sample_rate)
    shortest = max(1, round(MIN_CHUNK_SECONDS * sample_rate))
    if chunk < shortest:
        raise InvalidField(field, f"{chunk} is under {shortest} samples ({1000 * MIN_CHUNK_SECONDS:g} ms of audio)")
    if chunk > limits.max_chunk_seconds * sample_rate:
        raise InvalidField(field, f"{chunk} exceeds {limits.max_chunk_seconds:g} s of audio")
    if chunk * BYTES_PER_SAMPLE[encoding] + CHUNK_OVERHEAD_BYTES > limits.max_message_bytes:
        raise InvalidField(field, f"{chunk} samples of {pb.AudioEncoding.Name(encoding)} would not fit the server's "
                                  f"{limits.max_message_bytes}-byte messages")
    return chunk


def validate(request: pb.GenerateRequest, cfg: WaveNetConfig, limits: Limits, streamed: bool, seed: int,
             field: str = "", default_temperature: float = TEMPERATURE) -> Request:
    """A GenerateRequest (or Synthesize's config, streamed=True) checked against the model and the limits."""
    prefix = f"{field}." if field else ""
    speaker = request.speaker if request.HasField("speaker") else 0
    if request.HasField("speaker") and speaker >= max(1, cfg.speakers):
        raise InvalidField(f"{prefix}speaker", f"{speaker} is not a speaker of this model (it has "
                                                f"{cfg.speakers or 'no'} speakers)")
    temperature = request.temperature if request.HasField("temperature") else default_temperature
    if not math.isfinite(temperature) or not 0 <= temperature <= limits.max_temperature:
        raise InvalidField(f"{prefix}temperature", f"must be in [0, {limits.max_temperature:g}], got {temperature}")
    encoding = encoding_of(request.encoding, f"{prefix}encoding")
    chunk = chunk_samples(request, cfg.sample_rate, limits, encoding, f"{prefix}chunk_samples")
    length = length_in_samples(request, cfg.sample_rate, limits, prefix)
    frames, given_pitch = None, None
    if request.HasField("features"):
        if streamed:
            raise InvalidField(f"{prefix}features", "send frames in the messages after the config")
        frames = frames_of(request.features, cfg.mel, frame_limit(limits, cfg.mel), f"{prefix}features")
        given_pitch = pitch_of(request.features, cfg, f"{prefix}features")
    elif length is None and not streamed:
        raise InvalidField(f"{prefix}length", "give seconds or samples (or features to vocode)")
    uses_features = frames is not None or streamed
    if uses_features and cfg.mel is None:
        raise InvalidField(f"{prefix}features", "this model takes no features")
    prime, prime_last = None, 0.0
    if request.HasField("prime"):
        prime_encoding = encoding_of(request.prime.encoding, f"{prefix}prime.encoding")
        audio = decode_audio(request.prime.data, prime_encoding, f"{prefix}prime.data")
        if len(audio) > limits.max_prime_seconds * cfg.sample_rate:
            raise InvalidField(f"{prefix}prime.data", f"longer than {limits.max_prime_seconds:g} s")
        prime = emphasis.encode(audio, cfg.preemphasis, cfg.classes) if len(audio) else None
        prime_last = float(audio[-1]) if len(audio) else 0.0
    if prime is not None and frames is not None:
        assert cfg.mel is not None  # frames_of refused features for a model without them
        if not frames_cover_prime(len(frames), cfg.mel.hop, len(prime)):
            raise InvalidField(f"{prefix}prime", "the prime must be shorter than the audio the features cover")
    stream = StreamConfig(speaker=speaker, temperature=temperature, seed=seed, length=length, features=uses_features)
    return Request(stream=stream, prime=prime, prime_last=prime_last, frames=frames, pitch=given_pitch,
                   encoding=encoding, chunk_samples=chunk)
