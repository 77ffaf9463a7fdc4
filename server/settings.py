"""The serving constants and per-request limits: one place for each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wavenet.defaults import DEFAULT_PORT, MAX_MESSAGE_BYTES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default.pt"
DEFAULT_CHUNK_SECONDS = 0.1  # audio per AudioChunk unless the request says otherwise
FIRST_CHUNK_SECONDS = 0.01  # the first AudioChunk's audio at most; each next one up to twice the one before
MIN_CHUNK_SECONDS = 0.005  # the shortest chunk_samples a request may ask for: a message per sample would flood the loop
STEP_TARGET_SECONDS = 0.05  # the scheduler sizes each batch step to about this much wall time
BUFFER_SECONDS = 3.0  # a stream stops being stepped once this much of its audio waits unread
GRACE_SECONDS = 10.0  # on SIGTERM, active streams get this long to finish
MIN_MESSAGE_BYTES = 4096  # the smallest --max-message-bytes taken (the smallest chunk, 5 ms of FLOAT32, is 320 B)


@dataclass(frozen=True)
class Limits:
    """Per-request limits; every one is a server flag."""

    max_seconds: float = 600.0  # of audio per request
    max_frames: int = 48_000  # feature frames per request (10 min at hop 200, 16 kHz)
    max_prime_seconds: float = 10.0
    max_chunk_seconds: float = 5.0
    max_temperature: float = 10.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    idle_seconds: float = 60.0  # a call that receives no input and sends no audio this long is ended


@dataclass(frozen=True)
class ServeOptions:
    """How the server listens and whom it lets in."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    limits: Limits = Limits()
    grace: float = GRACE_SECONDS
    tls_cert: bytes | None = None  # PEM; with tls_key, the server speaks TLS only
    tls_key: bytes | None = None
    tokens: frozenset[str] = frozenset()  # empty: no authentication
    max_connection_age: float = 0.0  # seconds before a client connection is asked to reconnect (0: never)


def first_chunk_samples(sample_rate: int) -> int:
    """The first AudioChunk's samples at most (FIRST_CHUNK_SECONDS), and the steps a stream's first batch step
    takes, so that its first audio is made and sent within milliseconds."""
    return max(1, round(FIRST_CHUNK_SECONDS * sample_rate))
