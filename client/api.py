"""The Python client: typed calls that yield numpy audio chunks."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
import numpy as np

from wavenet.audio import normalise_loudness, to_mono
from wavenet.codec import decode_audio
from wavenet.defaults import DEFAULT_PORT, MAX_MESSAGE_BYTES
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

ITERATOR_FAILED = "Exception iterating requests!"  # grpcio's details when a request iterator raises (UNKNOWN)
FRAMES_PER_MESSAGE = 8  # frames per Synthesize message when streaming a recording (100 ms at hop 200, 16 kHz)


@dataclass(frozen=True)
class Chunk:
    """Audio from the server: float32 samples in [-1, 1] starting at sample `first_sample` of the stream."""

    first_sample: int
    audio: np.ndarray
    summary: pb.Summary | None  # on the last chunk only


class Pitched(NamedTuple):
    """A block of frames with the caller's pitch, for a model whose ModelInfo has `pitch`: F0 in Hz per frame (at
    the frame's first sample; 0 where unvoiced) and, optionally, periodicity in [0, 1] per frame."""

    frames: np.ndarray
    f0_hz: np.ndarray
    periodicity: np.ndarray | None = None


# How a client spreads its calls over the replicas a target names, and fails over (docs/api.md holds the same JSON
# for other languages): round_robin over every address, and a Generate or ListModels refused before any response (a
# full replica's RESOURCE_EXHAUSTED, a draining one's UNAVAILABLE) tried again on the next, up to 4 attempts in all.
# Not Synthesize: gRPC replays a client stream's messages on a retry, and some were lost that way: in a 10-minute
# soak of three replicas (bench/soak.py) 4 of 21,756 completed calls, all Synthesize, ended OK with only their first
# frames' audio, and 1 of 20 retried Synthesize calls in a loopback test did too. Its refusal reaches the caller,
# whose next call round_robin sends to another replica.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": "wavenet.v1.WaveNet", "method": "Generate"},
                 {"service": "wavenet.v1.WaveNet", "method": "ListModels"}],
        "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.05s", "maxBackoff": "0.5s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]},
    }],
}


SPREAD_OPTIONS = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(SERVICE_CONFIG))]  # channel options


def channel_target(target: str) -> str:
    """The gRPC target for a server address: as given (host:port, dns:///name:port, ipv4:..., unix:...), or, for
    several comma-separated host:port addresses, each resolved once to an IP address, as an ipv4: or ipv6: list."""
    if "," not in target or "://" in target or target.startswith(("ipv4:", "ipv6:", "unix:")):
        return target
    resolved = []
    for address in (a.strip() for a in target.split(",")):
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"server: {address!r} is not host:port")
        family, *_, sockaddr = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0]
        resolved.append((family, f"[{sockaddr[0]}]:{port}" if family == socket.AF_INET6 else f"{sockaddr[0]}:{port}"))
    families = {family for family, _ in resolved}
    if len(families) != 1:
        raise ValueError(f"server: {target!r} mixes IPv4 and IPv6 addresses; give one kind")
    scheme = "ipv6" if families == {socket.AF_INET6} else "ipv4"
    return f"{scheme}:{','.join(address for _, address in resolved)}"


class WaveNetClient:
    """A connection to one wavenet-server or several: calls are spread round-robin over the addresses the target
    names (dns:///name:port, every address the name resolves to; or host:port,host:port,...) and a call a replica
    refuses before answering (full, or draining) is tried on the next (SERVICE_CONFIG)."""

    def __init__(self, target: str = f"localhost:{DEFAULT_PORT}", timeout: float | None = None, *,
                 tls: bool = False, ca: bytes | None = None, token: str | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES):
        """tls: verify the server against ca (PEM; None: the system roots); token: sent as a bearer token."""
        target = channel_target(target)
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes),
                   *SPREAD_OPTIONS]
        if tls or ca is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca)
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.WaveNetStub(self.channel)
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.max_message_bytes = max_message_bytes

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> WaveNetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def models(self) -> list[pb.ModelInfo]:
        return list(self.stub.ListModels(pb.ListModelsRequest(), timeout=self.timeout, metadata=self.metadata).models)

    def model(self, name: str = "") -> pb.ModelInfo:
        """One model's description (the default model for '')."""
        models = self.models()
        for info in models:
            if info.name == name or not name:
                return info
        raise KeyError(f"no model named {name!r} (have {', '.join(m.name for m in models)})")

    def generate(self, seconds: float | None = None, *, samples: int | None = None, model: str = "",
                 speaker: int | None = None, temperature: float | None = None, seed: int | None = None,
                 features: np.ndarray | None = None, prime: np.ndarray | None = None,
                 chunk_samples: int = 0) -> Iterator[Chunk]:
        """Free-running audio (give seconds or samples), or features (frames, channels) vocoded whole.

        Bad arguments raise ValueError here; the call starts when the chunks are first asked for.
        """
        request = request_for(model=model, seconds=seconds, samples=samples, speaker=speaker,
                              temperature=temperature, seed=seed, chunk_samples=chunk_samples)
        if features is not None:
            request.features.CopyFrom(frames_message(frame_array(features, "features")))
        if prime is not None:
            request.prime.CopyFrom(pb.Audio(encoding=pb.FLOAT32, data=np.asarray(prime, "<f4").tobytes()))
        if request.ByteSize() > self.max_message_bytes:
            field = "features" if request.features.ByteSize() >= request.prime.ByteSize() else "prime"
            raise ValueError(f"{field}: makes the request {request.ByteSize():,} bytes, over the "
                             f"{self.max_message_bytes:,}-byte message limit"
                             + ("; send long features through synthesize(), which splits them"
                                if field == "features" else ""))
        return self._chunks(lambda: self.stub.Generate(request, timeout=self.timeout, metadata=self.metadata))

    def synthesize(self, frames: Iterable[np.ndarray | Pitched], *, model: str = "", speaker: int | None = None,
                   temperature: float | None = None, seed: int | None = None, seconds: float | None = None,
                   chunk_samples: int = 0) -> Iterator[Chunk]:
        """Live vocoding: blocks of (n, channels) frames go out as they come, audio comes back as it is made.

        Blocks of any length: empty ones are skipped, long ones are split to fit the message limit. A block may
        carry the caller's pitch (Pitched), for a model that takes it. An exception
        from `frames` (the front end failing) cancels the call and is raised to the caller, with the call's
        status as its cause.
        """
        messages = (pb.SynthesizeRequest(frames=message) for block in frames
                    for message in block_messages(block, self.max_message_bytes))
        return self._synthesize(messages, model=model, speaker=speaker, temperature=temperature, seed=seed,
                                seconds=seconds, chunk_samples=chunk_samples)

    def vocode(self, audio: np.ndarray, sample_rate: int, *, model: str = "", realtime: bool = False,
               speaker: int | None = None, temperature: float | None = None, seed: int | None = None,
               chunk_samples: int = 0) -> Iterator[Chunk]:
        """A recording re-voiced through Synthesize's audio input: the server computes its frames as training did.

        audio: (samples,) or (samples, channels), float in [-1, 1], any rate. Sent whole (the default), the server
        scales its loudness as training did, which needs all of it: the audio comes once it is all in. With
        `realtime` it goes out paced like a live source, scaled to training's level here (the recording is whole
        here), and the server makes frames as it arrives. A recording that cannot be used raises ValueError here.
        """
        info = self.model(model)
        if not info.HasField("features"):
            raise ValueError(f"model {info.name} takes no features")
        samples = recording_samples(audio, sample_rate, info.features.hop, info.sample_rate)
        loudness = pb.NORMALISED
        if realtime:
            samples = normalise_loudness(to_mono(samples.astype(np.float64)), sample_rate)[:, None].astype(np.float32)
            loudness = pb.AS_SENT
        messages = (pb.SynthesizeRequest(audio=block) for block in
                    audio_blocks(samples, sample_rate, loudness, AUDIO_BLOCK_SECONDS if realtime else 0.0,
                                 self.max_message_bytes))
        return self._synthesize(messages, model=info.name, speaker=speaker, temperature=temperature, seed=seed,
                                seconds=None, chunk_samples=chunk_samples)

    def _synthesize(self, messages: Iterable[pb.SynthesizeRequest], *, model: str, speaker: int | None,
                    temperature: float | None, seed: int | None, seconds: float | None,
                    chunk_samples: int) -> Iterator[Chunk]:
        """A Synthesize call: the config, the input messages as they come, the end."""
        config = request_for(model=model, seconds=seconds, samples=None, speaker=speaker, temperature=temperature,
                             seed=seed, chunk_samples=chunk_samples)
        failed: list[Exception] = []

        def requests() -> Iterator[pb.SynthesizeRequest]:
            yield pb.SynthesizeRequest(config=config)
            try:
                yield from messages
            except Exception as exc:  # gRPC logs it and cancels the call: keep it for the caller
                failed.append(exc)
                raise
            yield pb.SynthesizeRequest(end=pb.EndOfInput())

        return self._chunks(lambda: self.stub.Synthesize(requests(), timeout=self.timeout, metadata=self.metadata),
                            failed)

    @staticmethod
    def _chunks(start: Callable[[], Any], failed: list[Exception] | None = None) -> Iterator[Chunk]:
        """The call's chunks; it starts at the first one asked for and is cancelled when they are no longer read."""
        call = start()
        try:
            yield from chunks_of(call)
        except grpc.RpcError as status:
            if failed and isinstance(status, grpc.Call) and status.details() == ITERATOR_FAILED:
                raise failed[0] from status  # the call ended because `frames` raised: that is the news
            raise  # it ended for its own reason first (the server's status), whatever the front end did later
        finally:
            call.cancel()


def request_for(*, model: str, seconds: float | None, samples: int | None, speaker: int | None,
                temperature: float | None, seed: int | None, chunk_samples: int) -> pb.GenerateRequest:
    """A GenerateRequest in float32, with only the fields given."""
    request = pb.GenerateRequest(model=model, encoding=pb.FLOAT32, chunk_samples=chunk_samples)
    if seconds is not None:
        request.seconds = seconds
    if samples is not None:
        request.samples = samples
    if speaker is not None:
        request.speaker = speaker
    if temperature is not None:
        request.temperature = temperature
    if seed is not None:
        request.seed = seed
    return request


def frame_array(frames: np.ndarray, field: str) -> np.ndarray:
    """frames as a float32 (frames, channels) array; ValueError naming field for any other shape."""
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 2:
        raise ValueError(f"{field}: expected a (frames, channels) array, got shape {frames.shape}")
    return frames


def frames_message(frames: np.ndarray, f0_hz: np.ndarray | None = None,
                   periodicity: np.ndarray | None = None) -> pb.FeatureFrames:
    return pb.FeatureFrames(values=frames.ravel().tolist(), num_frames=len(frames),
                            f0_hz=[] if f0_hz is None else f0_hz.tolist(),
                            periodicity=[] if periodicity is None else periodicity.tolist())


def block_messages(block: np.ndarray | Pitched, max_message_bytes: int) -> Iterator[pb.FeatureFrames]:
    """A block of frames (with the caller's pitch or not) as FeatureFrames messages that fit the message limit;
    ValueError naming the field for arrays of the wrong shape."""
    frames = frame_array(block.frames if isinstance(block, Pitched) else block, "frames")
    f0 = periodicity = None
    if isinstance(block, Pitched):
        f0 = per_frame(block.f0_hz, len(frames), "f0_hz")
        periodicity = None if block.periodicity is None else per_frame(block.periodicity, len(frames), "periodicity")
    start = 0
    for piece in message_pieces(frames, max_message_bytes):
        end = start + len(piece)
        yield frames_message(piece, None if f0 is None else f0[start:end],
                             None if periodicity is None else periodicity[start:end])
        start = end


def per_frame(values: np.ndarray, n_frames: int, field: str) -> np.ndarray:
    """One float32 value per frame; ValueError naming field for any other count."""
    values = np.asarray(values, np.float32).reshape(-1)
    if len(values) != n_frames:
        raise ValueError(f"{field}: {len(values)} values for {n_frames} frames")
    return values


def message_pieces(block: np.ndarray, max_message_bytes: int) -> Iterator[np.ndarray]:
    """A (frames, channels) block in pieces whose messages fit in half the message limit (none if it is empty)."""
    rows = max(1, max_message_bytes // 2 // (4 * max(block.shape[1], 1)))
    for i in range(0, len(block), rows):
        yield block[i : i + rows]


def chunks_of(responses: Iterable[pb.AudioChunk]) -> Iterator[Chunk]:
    for response in responses:
        yield Chunk(response.first_sample, decode_chunk(response),
                    response.summary if response.HasField("summary") else None)


def decode_chunk(chunk: pb.AudioChunk) -> np.ndarray:
    """(num_samples,) float32 audio of a chunk in any encoding."""
    return decode_audio(chunk.audio, chunk.encoding or pb.PCM16, "audio")


AUDIO_BLOCK_SECONDS = 0.1  # audio per RecordedAudio message when paced


def recording_samples(audio: np.ndarray, sample_rate: int, hop: int, model_rate: int) -> np.ndarray:
    """(samples, channels) float32 of a recording to send; ValueError for a shape that is not (samples,) or
    (samples, channels), or a recording shorter than one frame."""
    audio = np.asarray(audio)
    if not (audio.ndim == 1 or (audio.ndim == 2 and audio.shape[1] <= audio.shape[0])):
        raise ValueError(f"audio: expected (samples,) or (samples, channels), got shape {audio.shape}"
                         + (" (channels first? pass audio.T)" if audio.ndim == 2 else ""))
    if len(audio) * model_rate // sample_rate < hop:
        raise ValueError(f"audio: {len(audio)} samples at {sample_rate} Hz is shorter than one frame "
                         f"({hop} samples at {model_rate} Hz)")
    return (audio[:, None] if audio.ndim == 1 else audio).astype(np.float32)


def audio_blocks(samples: np.ndarray, sample_rate: int, loudness: pb.Loudness, seconds_per_block: float,
                 max_message_bytes: int) -> Iterator[pb.RecordedAudio]:
    """RecordedAudio messages of (samples, channels) float32, each within the message limit; paced like a live
    source when seconds_per_block > 0 (one block's audio each seconds_per_block, from the first)."""
    channels = samples.shape[1]
    per_block = min(max(1, round(seconds_per_block * sample_rate)) if seconds_per_block else len(samples),
                    max(1, (max_message_bytes - 1024) // (4 * channels)))
    start = time.monotonic()
    for k, i in enumerate(range(0, len(samples), per_block)):
        if seconds_per_block and (delay := start + k * seconds_per_block - time.monotonic()) > 0:
            time.sleep(delay)
        yield pb.RecordedAudio(encoding=pb.FLOAT32, sample_rate=sample_rate, channels=channels, loudness=loudness,
                               data=np.ascontiguousarray(samples[i : i + per_block], "<f4").tobytes())


def frame_blocks(frames: np.ndarray, per_block: int, seconds_per_frame: float) -> Iterator[np.ndarray]:
    """Blocks of frames, paced like a live feed when seconds_per_frame > 0."""
    start = time.monotonic()
    for i in range(0, len(frames), per_block):
        if seconds_per_frame:
            delay = start + (i + per_block) * seconds_per_frame - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield frames[i : i + per_block]
