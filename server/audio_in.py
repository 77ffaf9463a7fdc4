"""Synthesize's recorded-audio input: RecordedAudio messages to log-mel frames, computed as training computed them.

NORMALISED (the default) holds the recording until the input ends, then computes its frames exactly as
wavenet.audio.recording_frames does (the client library's own frames path), since the loudness scale needs all of
it. AS_SENT streams: each message's audio is mixed to mono, resampled by a running soxr stream, rounded to 16 bits,
and every frame whose window is complete is computed at once, bit for bit the frames of the whole signal
(wavenet.features.log_mel over a range).
"""

from __future__ import annotations

import numpy as np
import soxr

from wavenet import audio as audio_fns
from wavenet.codec import InvalidField
from wavenet.features import MelSpec, frames_ready, log_mel, n_frames
from wavenet.v1 import wavenet_pb2 as pb

MIN_RATE, MAX_RATE = 1_000, 192_000
MAX_CHANNELS = 8
SAMPLE_BYTES = {pb.PCM16: 2, pb.FLOAT32: 4}


def samples_of(msg: pb.RecordedAudio, field: str) -> np.ndarray:
    """(samples, channels) float32 in [-1, 1] of one message; InvalidField naming what is wrong."""
    encoding = msg.encoding or pb.PCM16
    if encoding not in SAMPLE_BYTES:
        raise InvalidField(f"{field}.encoding", f"{pb.AudioEncoding.Name(encoding)} is not accepted for input: "
                                                "send PCM16 or FLOAT32")
    channels = msg.channels or 1
    width = SAMPLE_BYTES[encoding] * channels
    if len(msg.data) % width:
        raise InvalidField(f"{field}.data", f"{len(msg.data)} bytes is not a whole number of {width}-byte samples "
                                            f"({pb.AudioEncoding.Name(encoding)}, {channels} channel(s))")
    if encoding == pb.PCM16:
        values = np.frombuffer(msg.data, "<i2").astype(np.float32) / 32768.0
    else:
        values = np.frombuffer(msg.data, "<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise InvalidField(f"{field}.data", "NaN or infinite samples")
    return values.reshape(-1, channels)


class AudioFramer:
    """One call's RecordedAudio messages in, log-mel frames out. The first message fixes the format and loudness;
    `limit` caps the frames a call may make (the server's --max-frames and --max-seconds)."""

    def __init__(self, spec: MelSpec, first: pb.RecordedAudio, limit: int, field: str = "audio"):
        self.spec, self.limit, self.field = spec, limit, field
        self.format = (first.encoding or pb.PCM16, first.sample_rate, first.channels or 1)
        if not MIN_RATE <= first.sample_rate <= MAX_RATE:
            raise InvalidField(f"{field}.sample_rate", f"{first.sample_rate} Hz: must be {MIN_RATE:,} to "
                                                       f"{MAX_RATE:,} Hz")
        if not 1 <= self.format[2] <= MAX_CHANNELS:
            raise InvalidField(f"{field}.channels", f"{first.channels}: must be 1 to {MAX_CHANNELS} (0 means 1)")
        if first.loudness not in (pb.LOUDNESS_UNSPECIFIED, pb.NORMALISED, pb.AS_SENT):
            raise InvalidField(f"{field}.loudness", f"unknown value {first.loudness}")
        self.streaming = first.loudness == pb.AS_SENT
        self.held: list[np.ndarray] = []  # NORMALISED: every message's samples, as sent
        self.received = 0  # input samples (per channel)
        self.resampler = (soxr.ResampleStream(first.sample_rate, spec.sample_rate, 1, dtype="float64", quality="HQ")
                          if self.streaming and first.sample_rate != spec.sample_rate else None)
        self.tail = np.zeros(0)  # AS_SENT: the model-rate signal from sample `offset` on, as far as it has come
        self.offset = 0
        self.total = 0  # AS_SENT: model-rate samples so far
        self.made = 0  # AS_SENT: frames made so far

    def add(self, msg: pb.RecordedAudio) -> np.ndarray:
        """The frames this message completes ((0, n_mels) while NORMALISED waits for the end)."""
        fmt = (msg.encoding or pb.PCM16, msg.sample_rate, msg.channels or 1)
        if fmt != self.format:
            raise InvalidField(self.field, f"encoding, sample_rate and channels {fmt} differ from the call's first "
                                           f"audio message's {self.format}")
        samples = samples_of(msg, self.field)
        self.received += len(samples)
        if self.received * self.spec.sample_rate / self.format[1] / self.spec.hop > self.limit:
            raise InvalidField(f"{self.field}.data", f"{self.received / self.format[1]:.1f} s of audio exceed the "
                                                     f"limit of {self.limit} frames per call")
        if not self.streaming:
            self.held.append(samples)
            return np.zeros((0, self.spec.n_mels), np.float32)
        return self._stream(samples, last=False)

    def end(self) -> np.ndarray:
        """The frames left once the input has ended; InvalidField for audio shorter than one frame."""
        if not self.streaming:
            held = np.concatenate(self.held) if self.held else np.zeros((0, self.format[2]), np.float32)
            try:
                return audio_fns.recording_frames(held, self.format[1], self.spec)
            except ValueError as exc:
                raise InvalidField(self.field, str(exc).removeprefix("audio: ")) from None
        frames = self._stream(np.zeros((0, self.format[2]), np.float32), last=True)
        if self.made == 0:
            raise InvalidField(self.field, f"{self.received} samples at {self.format[1]} Hz is shorter than one "
                                           f"frame ({self.spec.hop} samples at {self.spec.sample_rate} Hz)")
        return frames

    def _stream(self, samples: np.ndarray, last: bool) -> np.ndarray:
        """AS_SENT: mono, resampled, 16-bit; the frames now complete (with `last`, all the rest, zero past the end)."""
        mono = audio_fns.to_mono(samples.astype(np.float64))
        if self.resampler is not None:
            mono = self.resampler.resample_chunk(mono, last=last)
        signal = audio_fns.quantise(mono) / 32768.0
        self.tail = np.concatenate([self.tail, signal])
        self.total += len(signal)
        ready = n_frames(self.total, self.spec) if last else frames_ready(self.total, self.spec)
        if ready <= self.made:
            return np.zeros((0, self.spec.n_mels), np.float32)
        frames = log_mel(self.tail, self.spec, self.made, ready - self.made, self.offset)
        self.made = ready
        keep_from = max(0, self.made * self.spec.hop + self.spec.hop // 2 - self.spec.n_fft // 2)
        if keep_from > self.offset:  # what the next frames cannot reach
            self.tail = self.tail[keep_from - self.offset :]
            self.offset = keep_from
        return frames
