from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    PCM16: _ClassVar[AudioEncoding]
    FLOAT32: _ClassVar[AudioEncoding]
    MULAW8: _ClassVar[AudioEncoding]

class Loudness(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOUDNESS_UNSPECIFIED: _ClassVar[Loudness]
    NORMALISED: _ClassVar[Loudness]
    AS_SENT: _ClassVar[Loudness]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
PCM16: AudioEncoding
FLOAT32: AudioEncoding
MULAW8: AudioEncoding
LOUDNESS_UNSPECIFIED: Loudness
NORMALISED: Loudness
AS_SENT: Loudness

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class FeatureSpec(_message.Message):
    __slots__ = ("channels", "hop", "lookahead_frames", "sample_rate", "window", "fft_size", "fmin", "fmax", "description")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    HOP_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FFT_SIZE_FIELD_NUMBER: _ClassVar[int]
    FMIN_FIELD_NUMBER: _ClassVar[int]
    FMAX_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    channels: int
    hop: int
    lookahead_frames: int
    sample_rate: int
    window: int
    fft_size: int
    fmin: float
    fmax: float
    description: str
    def __init__(self, channels: _Optional[int] = ..., hop: _Optional[int] = ..., lookahead_frames: _Optional[int] = ..., sample_rate: _Optional[int] = ..., window: _Optional[int] = ..., fft_size: _Optional[int] = ..., fmin: _Optional[float] = ..., fmax: _Optional[float] = ..., description: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "sample_rate", "classes", "receptive_field", "speakers", "features", "free_running", "default_temperature", "pitch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    RECEPTIVE_FIELD_FIELD_NUMBER: _ClassVar[int]
    SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FREE_RUNNING_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    sample_rate: int
    classes: int
    receptive_field: int
    speakers: _containers.RepeatedScalarFieldContainer[str]
    features: FeatureSpec
    free_running: bool
    default_temperature: float
    pitch: PitchSpec
    def __init__(self, name: _Optional[str] = ..., sample_rate: _Optional[int] = ..., classes: _Optional[int] = ..., receptive_field: _Optional[int] = ..., speakers: _Optional[_Iterable[str]] = ..., features: _Optional[_Union[FeatureSpec, _Mapping]] = ..., free_running: _Optional[bool] = ..., default_temperature: _Optional[float] = ..., pitch: _Optional[_Union[PitchSpec, _Mapping]] = ...) -> None: ...

class PitchSpec(_message.Message):
    __slots__ = ("f0_min_hz", "f0_max_hz", "description")
    F0_MIN_HZ_FIELD_NUMBER: _ClassVar[int]
    F0_MAX_HZ_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    f0_min_hz: float
    f0_max_hz: float
    description: str
    def __init__(self, f0_min_hz: _Optional[float] = ..., f0_max_hz: _Optional[float] = ..., description: _Optional[str] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "speaker", "seconds", "samples", "temperature", "seed", "encoding", "chunk_samples", "prime", "features")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PRIME_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    model: str
    speaker: int
    seconds: float
    samples: int
    temperature: float
    seed: int
    encoding: AudioEncoding
    chunk_samples: int
    prime: Audio
    features: FeatureFrames
    def __init__(self, model: _Optional[str] = ..., speaker: _Optional[int] = ..., seconds: _Optional[float] = ..., samples: _Optional[int] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., chunk_samples: _Optional[int] = ..., prime: _Optional[_Union[Audio, _Mapping]] = ..., features: _Optional[_Union[FeatureFrames, _Mapping]] = ...) -> None: ...

class Audio(_message.Message):
    __slots__ = ("encoding", "data")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    encoding: AudioEncoding
    data: bytes
    def __init__(self, encoding: _Optional[_Union[AudioEncoding, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class FeatureFrames(_message.Message):
    __slots__ = ("values", "num_frames", "f0_hz", "periodicity")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    F0_HZ_FIELD_NUMBER: _ClassVar[int]
    PERIODICITY_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    num_frames: int
    f0_hz: _containers.RepeatedScalarFieldContainer[float]
    periodicity: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ..., num_frames: _Optional[int] = ..., f0_hz: _Optional[_Iterable[float]] = ..., periodicity: _Optional[_Iterable[float]] = ...) -> None: ...

class EndOfInput(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("config", "frames", "end", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: GenerateRequest
    frames: FeatureFrames
    end: EndOfInput
    audio: RecordedAudio
    def __init__(self, config: _Optional[_Union[GenerateRequest, _Mapping]] = ..., frames: _Optional[_Union[FeatureFrames, _Mapping]] = ..., end: _Optional[_Union[EndOfInput, _Mapping]] = ..., audio: _Optional[_Union[RecordedAudio, _Mapping]] = ...) -> None: ...

class RecordedAudio(_message.Message):
    __slots__ = ("encoding", "sample_rate", "channels", "data", "loudness")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LOUDNESS_FIELD_NUMBER: _ClassVar[int]
    encoding: AudioEncoding
    sample_rate: int
    channels: int
    data: bytes
    loudness: Loudness
    def __init__(self, encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., data: _Optional[bytes] = ..., loudness: _Optional[_Union[Loudness, str]] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("sequence", "first_sample", "num_samples", "encoding", "audio", "summary")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FIRST_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    first_sample: int
    num_samples: int
    encoding: AudioEncoding
    audio: bytes
    summary: Summary
    def __init__(self, sequence: _Optional[int] = ..., first_sample: _Optional[int] = ..., num_samples: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., audio: _Optional[bytes] = ..., summary: _Optional[_Union[Summary, _Mapping]] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("samples", "wall_seconds", "real_time_factor", "time_to_first_audio_seconds", "seed", "request_id")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REAL_TIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    samples: int
    wall_seconds: float
    real_time_factor: float
    time_to_first_audio_seconds: float
    seed: int
    request_id: str
    def __init__(self, samples: _Optional[int] = ..., wall_seconds: _Optional[float] = ..., real_time_factor: _Optional[float] = ..., time_to_first_audio_seconds: _Optional[float] = ..., seed: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...
