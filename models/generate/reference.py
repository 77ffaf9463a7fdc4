"""Fast WaveNet generation: per-stream, per-layer queues stepped as one batch, with streamed conditioning."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch

from models import pitch
from models.wavenet import GateBias, ResidualBlock, WaveNet, dilations, frame_context, pitch_inputs
from wavenet.mulaw import silence

UNBOUNDED = 2**62  # the end of a stream that runs until closed
COND_BLOCK = 16  # per-frame biases are computed in blocks of this many frames at fixed positions (see _condition)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniforms(seeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Counter-based uniforms in [0, 1): splitmix64(seed + (position + 1) * golden), one per (seed, position)."""
    z = seeds.astype(np.uint64) + (positions.astype(np.uint64) + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def sample(logits: np.ndarray, temperatures: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(B, classes) logits to classes by inverse-CDF sampling of softmax(logits / T) in float64; T = 0 is argmax."""
    logits = logits.astype(np.float64)
    greedy = temperatures <= 0
    scaled = logits / np.where(greedy, 1.0, temperatures)[:, None]
    p = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    picks = (cdf < (u * cdf[:, -1])[:, None]).sum(axis=1)
    picks = np.minimum(picks, logits.shape[1] - 1)
    return np.where(greedy, logits.argmax(axis=1), picks).astype(np.int64)


def frames_cover_prime(n_frames: int, hop: int, prime_samples: int) -> bool:
    """Whether features leave something to generate after a prime: their samples must outnumber the prime's."""
    return n_frames * hop > prime_samples


@dataclass(frozen=True)
class StreamConfig:
    """What a stream asks for."""

    speaker: int = 0
    temperature: float = 1.0
    seed: int = 0
    length: int | None = None  # samples to generate after the seed; None: as far as the features go
    features: bool = False  # True: conditioned on frames given with push_frames; False: run free


class FrameBuffer:
    """A stream's raw feature frames: appended at the end, dropped from the front, each frame copied O(1) times on
    average (a client may send frames far ahead of generation)."""

    def __init__(self, n_mels: int, fill: float = 0.0):
        self._data = np.zeros((0, n_mels), np.float32)
        self.fill = fill  # what window() gives for frames not received
        self._start = 0  # row of the first kept frame in _data
        self.offset = 0  # index of the first kept frame in the stream's frame sequence
        self.received = 0  # frames appended so far

    def append(self, frames: np.ndarray) -> None:
        kept = self.received - self.offset
        if self._start + kept + len(frames) > len(self._data):  # full: move to the front, doubling if need be
            capacity = max(len(self._data), 2 * (kept + len(frames)), 64)
            data = np.empty((capacity, self._data.shape[1]), np.float32)
            data[:kept] = self._data[self._start : self._start + kept]
            self._data, self._start = data, 0
        end = self._start + kept
        self._data[end : end + len(frames)] = frames
        self.received += len(frames)

    def window(self, lo: int, hi: int) -> np.ndarray:
        """(hi - lo, n_mels) frames lo..hi-1 of the stream, `fill` where none was received (before 0, past the
        end)."""
        assert max(lo, 0) >= self.offset, "frames already dropped"
        out = np.full((hi - lo, self._data.shape[1]), self.fill, np.float32)
        src_lo, src_hi = max(lo, 0), min(hi, self.received)
        if src_hi > src_lo:
            start = self._start + src_lo - self.offset
            out[src_lo - lo : src_hi - lo] = self._data[start : start + src_hi - src_lo]
        return out

    def drop_before(self, index: int) -> None:
        """Forget the frames before index."""
        index = min(max(index, self.offset), self.received)
        self._start += index - self.offset
        self.offset = index


@dataclass
class StreamState:
    """One stream's generation state; its queues live in the generator's bank at row `slot`."""

    config: StreamConfig
    slot: int
    seed_audio: np.ndarray | None  # classes still to prime from, or None once primed
    t: int = 0  # samples in the stream so far, seed included
    last: int = 0  # the previous sample's class: the next step's input (silence until the first)
    end: int = UNBOUNDED  # total samples when the stream is finished
    frames: FrameBuffer = field(default_factory=lambda: FrameBuffer(0))  # raw frames not yet made into biases
    ended: bool = False
    frame_bias: torch.Tensor | None = None  # (kept cond frames, width) per-frame gate biases
    pitch: np.ndarray | None = None  # (kept cond frames, 3) float64 F0, periodicity, phase (models with pitch input)
    history: np.ndarray | None = None  # the last inputs before position t, for pitch-lag taps (silence before 0)
    given_pitch: FrameBuffer | None = None  # models with pitch input: a caller's F0 and periodicity per frame (NaN:
    # not given), from the first frame not yet made into pitch rows
    frame_bias_offset: int = 0  # the frame of frame_bias's (and pitch's) first row
    cond_count: int = 0  # per-frame gate biases computed so far: only as far as generation has needed
    constant_bias: torch.Tensor | None = None  # (width,) speaker (+ free-running) bias


class Generator:
    """Steps any number of independent streams together; streams open and close between calls."""

    def __init__(self, model: WaveNet):
        self.model = model.eval()
        self.cfg = model.cfg
        self.dilations = dilations(self.cfg)
        self.width = len(self.dilations) * 2 * self.cfg.gate_channels
        self.streams: dict[int, StreamState] = {}
        self._ids = itertools.count()
        self._free_slots: list[int] = []
        self.capacity = 0
        self.queues: list[torch.Tensor] = []  # per layer (capacity, dilation, R)
        self._grow(4)
        self._weights = _step_weights(model)
        self._excitation_weight = (None if model.excitation_proj is None
                                   else model.excitation_proj.weight.detach().T.contiguous())  # (pitch inputs, width)
        # pitch-lag taps read at least `nearest` samples back: a chunk of that many steps reads only samples made
        # before it, so its inputs are known when it starts
        self._lag_nearest, farthest = pitch.lag_reach(self.cfg.sample_rate, self.cfg.pitch_lag)
        self._history = farthest + 1 if self.cfg.pitch_lag else 0
        with torch.inference_mode():
            self._free_bias = (
                model.gate_bias_from_cond(model.free_conditioning()[None, :, None])[0, :, 0]
                if self.cfg.mel is not None
                else torch.zeros(self.width)
            )

    # --- stream lifecycle ---------------------------------------------------------------------------
    def open(self, config: StreamConfig, seed_audio: np.ndarray | None = None) -> int:
        """Start a stream (optionally primed from seed_audio classes); returns its id."""
        if config.features and self.cfg.mel is None:
            raise ValueError("this model takes no features")
        if self.cfg.speakers and not 0 <= config.speaker < self.cfg.speakers:
            raise ValueError(f"speaker must be in [0, {self.cfg.speakers}), got {config.speaker}")
        if not self._free_slots:
            self._grow(2 * self.capacity)
        slot = self._free_slots.pop()
        for q in self.queues:
            q[slot].zero_()
        seed = None if seed_audio is None or len(seed_audio) == 0 else np.asarray(seed_audio, np.int64)
        state = StreamState(config=config, slot=slot, seed_audio=seed, last=silence(self.cfg.classes))
        if self._history and config.features:
            state.history = np.full(self._history, silence(self.cfg.classes), np.int64)
        if pitch_inputs(self.cfg) and config.features:
            state.given_pitch = FrameBuffer(2, fill=np.nan)
        prime = 0 if seed is None else len(seed)
        if config.length is not None:
            state.end = prime + config.length
        with torch.inference_mode():
            bias = torch.zeros(self.width) if config.features else self._free_bias.clone()
            if self.cfg.speakers:
                bias += self.model.gate_bias_from_speaker(torch.tensor([config.speaker]))[0]
        state.constant_bias = bias
        if self.cfg.mel is not None:
            state.frames = FrameBuffer(self.cfg.mel.n_mels)
        sid = next(self._ids)
        self.streams[sid] = state
        return sid

    def close(self, sid: int) -> None:
        """Forget a stream and free its slot."""
        state = self.streams.pop(sid)
        self._free_slots.append(state.slot)

    def push_frames(self, sid: int, frames: np.ndarray, given_pitch: np.ndarray | None = None) -> None:
        """Append (n, n_mels) feature frames to a features stream; given_pitch: for a model with pitch input,
        (n, 2) F0 in Hz (0: unvoiced) and periodicity of each frame, NaN where not given (models.pitch.with_given),
        in place of those the model predicts from the frames."""
        state = self.streams[sid]
        if not state.config.features:
            raise ValueError("stream was opened without features")
        if state.ended:
            raise ValueError("frames after end of input")
        assert self.cfg.mel is not None
        frames = np.asarray(frames, np.float32).reshape(-1, self.cfg.mel.n_mels)
        if given_pitch is not None:
            if state.given_pitch is None:
                raise ValueError("this model takes no pitch input")
            given_pitch = np.asarray(given_pitch, np.float32)
            if given_pitch.shape != (len(frames), 2):
                raise ValueError(f"given pitch: expected shape ({len(frames)}, 2), got {given_pitch.shape}")
        if state.given_pitch is not None:
            state.given_pitch.append(np.full((len(frames), 2), np.nan, np.float32) if given_pitch is None
                                     else given_pitch)
        state.frames.append(frames)

    def end_frames(self, sid: int) -> None:
        """No more frames: the stream can generate to the end of the frames it has."""
        state = self.streams[sid]
        assert self.cfg.mel is not None
        covered = state.frames.received * self.cfg.mel.hop
        prime = 0 if state.seed_audio is None else len(state.seed_audio)
        if prime and not frames_cover_prime(state.frames.received, self.cfg.mel.hop, prime):
            raise ValueError(f"the frames cover {covered} samples, not more than the {prime}-sample "
                             "prime: there is nothing to generate")
        state.ended = True
        state.end = min(state.end, covered)

    def ready(self, sid: int) -> int:
        """Samples the stream can generate now, seed excluded."""
        state = self.streams[sid]
        return max(0, min(self._conditioned_until(state), state.end) - self._position_after_seed(state))

    def done(self, sid: int) -> bool:
        """Whether the stream has generated all it will."""
        state = self.streams[sid]
        return state.seed_audio is None and state.t >= state.end

    # --- generation ---------------------------------------------------------------------------------
    def generate(self, max_steps: int, sids: list[int] | None = None) -> dict[int, np.ndarray]:
        """Run up to max_steps steps for every stream (or those in sids) with samples ready; their new classes."""
        chosen = {sid: self.streams[sid] for sid in (self.streams if sids is None else sids)}
        cap = self._chunk_cap()
        if cap is not None:
            max_steps = min(max_steps, cap)
        for state in chosen.values():
            if state.seed_audio is not None and self._conditioned_until(state) >= len(state.seed_audio):
                self._prime(state)
        counts = {sid: min(self.ready(sid), max_steps) for sid, s in chosen.items() if s.seed_audio is None}
        counts = {sid: n for sid, n in counts.items() if n > 0}
        if not counts:
            return {}
        sids = sorted(counts, key=lambda sid: -counts[sid])  # streams that run longest first
        states = [chosen[sid] for sid in sids]
        steps = counts[sids[0]]
        for sid, state in zip(sids, states):
            self._condition(state, state.t + counts[sid])
        bias = self._chunk_bias(states, [counts[sid] for sid in sids], steps)
        seeds = np.array([s.config.seed for s in states], np.uint64)
        temperatures = np.array([s.config.temperature for s in states], np.float64)
        lasts = [s.last for s in states]
        out = self._run_chunk(states, [counts[sid] for sid in sids], bias, seeds, temperatures)
        for row, (sid, state) in enumerate(zip(sids, states)):
            self._remember(state, np.concatenate([[lasts[row]], out[row, : counts[sid] - 1]]))
            self._trim(state)
        return {sid: out[row, : counts[sid]] for row, sid in enumerate(sids)}

    def step_logits(self, sids: list[int], inputs: np.ndarray) -> np.ndarray:
        """Teacher forcing: advance the given streams one step on the given input classes; (B, classes) logits."""
        states = [self.streams[sid] for sid in sids]
        bias = torch.stack([self._sample_bias(s, s.t, 1)[0] for s in states])
        logits = self._step(states, torch.as_tensor(np.asarray(inputs, np.int64)), bias)
        for state, cls in zip(states, np.asarray(inputs, np.int64).reshape(-1)):
            self._remember(state, np.array([cls]))
        return logits.numpy()

    def _chunk_cap(self) -> int | None:
        """The most steps one chunk may take: with pitch-lag taps, as many as read only samples made before it."""
        return self._lag_nearest if self._history else None

    def _remember(self, state: StreamState, inputs: np.ndarray) -> None:
        """Append the classes fed as inputs to the stream's history (models with pitch-lag taps)."""
        if state.history is not None:
            state.history = np.concatenate([state.history, inputs])[-self._history :]

    # --- internals ----------------------------------------------------------------------------------
    def _chunk_bias(self, states: list[StreamState], counts: list[int], steps: int) -> torch.Tensor:
        """(B, steps, width) gate biases for each stream's next counts[row] samples (rows past their count: unused).

        Streams without features have one bias for every sample: if no stream in the chunk has features, the
        result is a broadcast view of those, with nothing copied.
        """
        if not any(s.config.features for s in states):
            return constant_bias(states, steps)
        bias = torch.zeros(len(states), steps, self.width)
        for row, (state, count) in enumerate(zip(states, counts)):
            bias[row, :count] = self._sample_bias(state, state.t, count)
        return bias

    def _run_chunk(
        self,
        states: list[StreamState],
        counts: list[int],
        bias: torch.Tensor,
        seeds: np.ndarray,
        temperatures: np.ndarray,
    ) -> np.ndarray:
        """Step streams (sorted longest first) counts[row] times each on the (B, steps, width) gate biases.

        Samples every step, advances each stream's t and last; returns the (B, steps) classes (0 past a count).
        """
        steps = bias.shape[1]
        out = np.zeros((len(states), steps), np.int64)
        active = len(states)
        for i in range(steps):
            while counts[active - 1] <= i:
                active -= 1
            batch = states[:active]
            inputs = torch.tensor([s.last for s in batch])
            positions = np.array([s.t for s in batch], np.uint64)
            logits = self._step(batch, inputs, bias[:active, i])
            picks = sample(logits.numpy(), temperatures[:active], uniforms(seeds[:active], positions))
            for state, pick in zip(batch, picks):
                state.last = int(pick)
            out[:active, i] = picks
        return out

    def _step(self, states: list[StreamState], inputs: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """One sample for each stream: reads and writes each layer's queue at t mod dilation. O(layers)."""
        w = self._weights
        g = self.cfg.gate_channels
        r = self.cfg.residual_channels
        slots = torch.tensor([s.slot for s in states])
        t = torch.tensor([s.t for s in states])
        with torch.inference_mode():
            h = w.embed[inputs]  # (B, R)
            skip = torch.zeros(len(states), self.cfg.skip_channels)
            for layer, dilation in enumerate(self.dilations):
                queue = self.queues[layer]
                ring = t % dilation
                past = queue[slots, ring]  # the layer's input at t - dilation
                queue[slots, ring] = h
                a = past @ w.past[layer].T + h @ w.current[layer].T + w.gate_bias[layer]
                a = a + bias[:, layer * 2 * g : (layer + 1) * 2 * g]
                z = torch.tanh(a[:, :g]) * torch.sigmoid(a[:, g:])
                o = z @ w.out[layer].T + w.out_bias[layer]
                h = h + o[:, :r]
                skip = skip + o[:, r:]
            hidden = torch.relu(torch.relu(skip) @ w.head1.T + w.head1_bias)
            logits = hidden @ w.head2.T + w.head2_bias
        for state in states:
            state.t += 1
        return logits

    def _prime(self, state: StreamState) -> None:
        """Fill the queues from one parallel forward pass over the seed's last receptive field (from a frame
        boundary): earlier samples cannot reach any queue, so a long seed costs no more than a short one."""
        seed = state.seed_audio
        assert seed is not None and state.constant_bias is not None
        hop = self.cfg.mel.hop if self.cfg.mel is not None else 1
        start = max(0, len(seed) - sum(self.dilations)) // hop * hop
        inputs = torch.as_tensor(np.concatenate([[silence(self.cfg.classes)], seed[:-1]])[start:])[None]
        per_frame = None
        if state.config.features:
            assert state.frame_bias is None, "no biases are made before the prime"
            # begin at the tail's first frame; with a sine excitation at the first, where its phase starts (all the
            # prime's frames are then conditioned: a long prime costs its length there)
            first = 0 if self.cfg.pitch_harmonics else start // hop
            state.cond_count = state.frame_bias_offset = first
            self._condition(state, len(seed))
            assert state.frame_bias is not None
            tail = start // hop - first
            per_frame = state.frame_bias[tail : tail + (len(seed) - start - 1) // hop + 2].T[None]  # (1, W, frames)
        fed = np.concatenate([[silence(self.cfg.classes)], seed[:-1]])  # the inputs of positions 0 .. len(seed) - 1
        excitation = None
        if state.history is not None:  # the tail's lag taps read no further back than the history holds
            lo = max(0, start - self._history)
            past = fed[lo:] if lo else np.concatenate([state.history, fed])
            excitation = self._excitation(state, start, len(seed) - start, (past, lo if lo else -self._history))
        elif state.pitch is not None:
            excitation = self._excitation(state, start, len(seed) - start)
        self._remember(state, fed)
        weight = None if self._excitation_weight is None else self._excitation_weight.T
        bias = GateBias(per_frame, state.constant_bias[None], hop, None if excitation is None else excitation[None],
                        weight)
        with torch.inference_mode():
            _, layer_inputs = self.model.run_layers(inputs, bias)
        for queue, dilation, h in zip(self.queues, self.dilations, layer_inputs):
            first = max(0, len(seed) - dilation)
            times = torch.arange(first, len(seed))
            queue[state.slot, times % dilation] = h[0, :, first - start :].T
        state.t = len(seed)
        state.last = int(seed[-1])
        state.seed_audio = None
        self._trim(state)

    def _position_after_seed(self, state: StreamState) -> int:
        return state.t if state.seed_audio is None else len(state.seed_audio)

    def _determined(self, state: StreamState) -> int:
        """Per-frame gate biases that the frames received so far determine (each reads the conv's lookahead)."""
        lookahead = frame_context(self.cfg)[1] - 1
        received = state.frames.received
        return received + 1 if state.ended else max(0, received - lookahead)

    def _conditioned_until(self, state: StreamState) -> int:
        """Samples of the stream's timeline whose conditioning is known."""
        if not state.config.features:
            return UNBOUNDED
        assert self.cfg.mel is not None
        return max(0, self._determined(state) - 1) * self.cfg.mel.hop

    def _sample_bias(self, state: StreamState, start: int, count: int) -> torch.Tensor:
        """(count, width) gate biases for samples [start, start + count) of the stream."""
        assert state.constant_bias is not None
        if not state.config.features:
            return state.constant_bias.expand(count, -1)
        self._condition(state, start + count)
        assert self.cfg.mel is not None and state.frame_bias is not None
        hop = self.cfg.mel.hop
        positions = torch.arange(start, start + count)
        frame = positions // hop - state.frame_bias_offset
        alpha = ((positions % hop).to(torch.float32) / hop)[:, None]
        left, right = state.frame_bias[frame], state.frame_bias[frame + 1]
        return left + (right - left) * alpha + self._added_bias(state, start, count)

    def _added_bias(self, state: StreamState, start: int, count: int) -> torch.Tensor:
        """(count, width) or (width,): what is added to the interpolated per-frame biases of samples
        [start, start + count): the stream's constant bias, plus, with pitch input, the excitation's."""
        assert state.constant_bias is not None
        excitation = self._excitation(state, start, count)
        if excitation is None:
            return state.constant_bias
        assert self._excitation_weight is not None
        return state.constant_bias + excitation.T @ self._excitation_weight

    def _excitation(self, state: StreamState, start: int, count: int,
                    past: tuple[np.ndarray, int] | None = None) -> torch.Tensor | None:
        """(pitch inputs, count) pitch inputs of positions [start, start + count) (models.pitch), or None without
        pitch. Lag taps read `past`, (inputs, the position of the first), by default the stream's history and
        state.last: enough for a chunk of at most _lag_nearest steps."""
        if state.pitch is None:
            return None
        assert self.cfg.mel is not None
        hop, origin = self.cfg.mel.hop, state.frame_bias_offset * self.cfg.mel.hop
        values, values_start = None, 0
        if state.history is not None:
            inputs, first = past or (np.concatenate([state.history, [state.last]]), state.t - len(state.history))
            values = pitch.companded(inputs, self.cfg.classes)
            values_start = first - 1 - origin  # the input of position p is sample p - 1
        return torch.from_numpy(pitch.sample_inputs(state.pitch, values, values_start, hop, self.cfg.sample_rate,
                                                    self.cfg.pitch_harmonics, self.cfg.pitch_lag, start - origin,
                                                    count))

    def _condition(self, state: StreamState, end_sample: int) -> None:
        """Make the per-frame gate biases that samples before end_sample read, as far as the frames received allow.

        Biases are made only as generation needs them, so a client that sends frames far ahead costs only their
        raw bytes. The frame network runs over blocks of COND_BLOCK rows at fixed positions, frames not received
        yet as zeros, and keeps the rows those frames do not reach: each row's bits then depend on its own frames
        alone, not on how they arrived or how far generation had got (a convolution's rounding depends on the
        length of its input).
        """
        if not state.config.features:
            return
        assert self.cfg.mel is not None
        left, right = frame_context(self.cfg)
        determined = self._determined(state)
        target = min(determined, (end_sample - 1) // self.cfg.mel.hop + 2)
        while state.cond_count < target:
            block = state.cond_count // COND_BLOCK * COND_BLOCK
            window = state.frames.window(block - left, block + COND_BLOCK + right - 1)
            with torch.inference_mode():
                frames = torch.from_numpy(window).T[None]
                rows = self.model.gate_bias_from_cond(self.model.frame_conditioning(frames))[0].T  # (COND_BLOCK, W)
                pitch_rows = self.model.pitch_rows(frames)[0].T.numpy() if pitch_inputs(self.cfg) else None
            stop = min(determined, block + COND_BLOCK)  # the whole block where its frames allow: made once
            new = rows[state.cond_count - block : stop - block]
            state.frame_bias = new if state.frame_bias is None else torch.cat([state.frame_bias, new])
            if pitch_rows is not None:
                self._extend_pitch(state, pitch_rows[state.cond_count - block : stop - block])
            state.cond_count = stop
        state.frames.drop_before(state.cond_count // COND_BLOCK * COND_BLOCK - left)  # the next block reads on
        if state.given_pitch is not None:
            state.given_pitch.drop_before(state.cond_count)

    def _extend_pitch(self, state: StreamState, rows: np.ndarray) -> None:
        """Append the pitch rows of frames cond_count.. from the (n, 2) predicted ones and what the caller gave,
        with their phases running on from the stream's last row."""
        assert self.cfg.mel is not None and state.given_pitch is not None
        previous = None if state.pitch is None or not len(state.pitch) else (state.pitch[-1, 0], state.pitch[-1, 2])
        given = state.given_pitch.window(state.cond_count, state.cond_count + len(rows))
        held = pitch.with_given(rows, given, pitch.HOLD_F0 if previous is None else previous[0])
        f0 = held[:, 0]
        phases = pitch.extend_phases(previous, f0, self.cfg.mel.hop, self.cfg.sample_rate)
        new = np.stack([f0, held[:, 1], phases], axis=1)
        state.pitch = new if state.pitch is None else np.concatenate([state.pitch, new])

    def _trim(self, state: StreamState) -> None:
        """Drop per-frame biases (and pitch rows) the stream has moved past."""
        if state.frame_bias is None or self.cfg.mel is None:
            return
        first_needed = state.t // self.cfg.mel.hop
        drop = first_needed - state.frame_bias_offset
        if drop > 0:
            state.frame_bias = state.frame_bias[drop:]
            if state.pitch is not None:
                state.pitch = state.pitch[drop:]
            state.frame_bias_offset = first_needed

    def _grow(self, capacity: int) -> None:
        """Make room for `capacity` streams, keeping the queues of the open ones."""
        old = self.capacity
        fresh = [torch.zeros(capacity - old, d, self.cfg.residual_channels) for d in self.dilations]
        self.queues = fresh if not old else [torch.cat([q, f]) for q, f in zip(self.queues, fresh)]
        self._free_slots.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity


@dataclass(frozen=True)
class StepWeights:
    """The model's weights laid out for one-sample steps."""

    embed: torch.Tensor  # (classes, R)
    past: list[torch.Tensor]  # per layer (2G, R): the tap at t - dilation
    current: list[torch.Tensor]  # per layer (2G, R): the tap at t
    gate_bias: list[torch.Tensor]  # per layer (2G,)
    out: list[torch.Tensor]  # per layer (R + S, G)
    out_bias: list[torch.Tensor]  # per layer (R + S,)
    head1: torch.Tensor  # (S, S)
    head1_bias: torch.Tensor
    head2: torch.Tensor  # (classes, S)
    head2_bias: torch.Tensor


def _step_weights(model: WaveNet) -> StepWeights:
    blocks = [cast(ResidualBlock, b) for b in model.blocks]
    head1, head2 = cast(torch.nn.Conv1d, model.head[1]), cast(torch.nn.Conv1d, model.head[3])
    return StepWeights(
        embed=model.embed.weight.detach(),
        past=[b.dilated.conv.weight[:, :, 0].detach().contiguous() for b in blocks],
        current=[b.dilated.conv.weight[:, :, 1].detach().contiguous() for b in blocks],
        gate_bias=[_bias(b.dilated.conv) for b in blocks],
        out=[b.out.weight[:, :, 0].detach().contiguous() for b in blocks],
        out_bias=[_bias(b.out) for b in blocks],
        head1=head1.weight[:, :, 0].detach().contiguous(),
        head1_bias=_bias(head1),
        head2=head2.weight[:, :, 0].detach().contiguous(),
        head2_bias=_bias(head2),
    )


def constant_bias(states: list[StreamState], steps: int) -> torch.Tensor:
    """Each stream's constant (speaker / free-running) gate bias as a broadcast (B, steps, width) view."""
    return torch.stack([cast(torch.Tensor, s.constant_bias) for s in states])[:, None].expand(-1, steps, -1)


def _bias(conv: torch.nn.Conv1d) -> torch.Tensor:
    assert conv.bias is not None
    return conv.bias.detach()
