"""The WaveNet: causal dilated convolution, residual block, config, conditioning, the model and its checkpoint."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import pitch
from wavenet.features import MelSpec
from wavenet.mulaw import CLASSES, silence

CHECKPOINT_FORMAT = "wavenet-stream/1"
TEMPERATURE = 1.0  # a model's sampling temperature unless its checkpoint names another ("temperature")


class CausalConv(nn.Module):
    """Kernel-2 dilated convolution: out[t] = W0 x[t - dilation] + W1 x[t] + b."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=2, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C', T)
        return self.conv(F.pad(x, (self.dilation, 0)))


class ResidualBlock(nn.Module):
    """Gated unit tanh(a) * sigmoid(b) over a dilated causal conv, with residual and skip outputs."""

    def __init__(self, residual_channels: int, gate_channels: int, skip_channels: int, dilation: int):
        super().__init__()
        self.gate_channels = gate_channels
        self.residual_channels = residual_channels
        self.dilated = CausalConv(residual_channels, 2 * gate_channels, dilation)
        self.out = nn.Conv1d(gate_channels, residual_channels + skip_channels, kernel_size=1)

    def forward(self, h: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.dilated(h)  # (B, 2G, T)
        if bias is not None:
            a = a + bias
        z = torch.tanh(a[:, : self.gate_channels]) * torch.sigmoid(a[:, self.gate_channels :])
        out = self.out(z)
        return h + out[:, : self.residual_channels], out[:, self.residual_channels :]


# WaveNetConfig's whole numbers are >= 1 but these
MIN_FIELD = {"classes": 2, "speakers": 0, "cond_lookahead": 0, "pitch_harmonics": 0, "pitch_lag": 0}


@dataclass(frozen=True)
class WaveNetConfig:
    """Everything needed to rebuild the model; saved inside every checkpoint."""

    sample_rate: int = 16000
    classes: int = CLASSES
    max_dilation: int = 512  # dilations 1, 2, 4, ... max_dilation, repeated dilation_cycles times
    dilation_cycles: int = 2
    residual_channels: int = 64
    gate_channels: int = 64  # channels of each of the tanh and sigmoid halves
    skip_channels: int = 128
    kernel_size: int = 2
    speakers: int = 0  # 0: no global conditioning
    speaker_channels: int = 16
    mel: MelSpec | None = field(default_factory=MelSpec)  # None: no local conditioning
    cond_channels: int = 64
    cond_kernel: int = 3  # frame-rate convolution over the mel frames
    cond_lookahead: int = 1  # future frames that convolution reads
    preemphasis: float = 0.0  # the classes are of x[t] - a x[t-1]; output is inverse-filtered (models.emphasis)
    pitch_harmonics: int = 0  # K > 0: a sine excitation of K harmonics from per-frame pitch (models.pitch) joins
    # every gate bias, and a pitch head predicts that pitch from the frames; 0: no pitch input
    pitch_lag: int = 0  # odd taps > 0: the signal one pitch period back (models.pitch.lag_taps) joins them too

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "mel":
                if value is not None and not isinstance(value, MelSpec):
                    raise ValueError(f"mel must be a MelSpec or None, got {value!r}")
            elif f.name == "preemphasis":
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise ValueError(f"preemphasis must be a number, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < MIN_FIELD.get(f.name, 1):
                raise ValueError(f"{f.name} must be a whole number >= {MIN_FIELD.get(f.name, 1)}, got {value!r}")
        if self.kernel_size != 2:
            raise ValueError("kernel_size must be 2 (the queue generator keeps one past input per layer)")
        if self.max_dilation < 1 or self.max_dilation & (self.max_dilation - 1):
            raise ValueError(f"max_dilation must be a power of two, got {self.max_dilation}")
        if not 0 <= self.cond_lookahead < self.cond_kernel:
            raise ValueError("cond_lookahead must be in [0, cond_kernel)")
        if self.mel is not None and self.mel.sample_rate != self.sample_rate:
            raise ValueError("mel.sample_rate must equal sample_rate")
        if not 0.0 <= self.preemphasis < 1.0:
            raise ValueError(f"preemphasis must be in [0, 1), got {self.preemphasis}")
        if pitch_inputs(self) and self.mel is None:
            raise ValueError("pitch input needs mel frames (the pitch is predicted from them)")
        if self.pitch_lag and not self.pitch_lag % 2:
            raise ValueError(f"pitch_lag must be odd (taps centred on the lag), got {self.pitch_lag}")


def pitch_inputs(cfg: WaveNetConfig) -> int:
    """Per-sample pitch inputs (0: none): the sine excitation's sin and cos of each harmonic, then the lag taps."""
    return 2 * cfg.pitch_harmonics + cfg.pitch_lag


def dilations(cfg: WaveNetConfig) -> tuple[int, ...]:
    """Each layer's dilation, in order."""
    cycle = tuple(2**i for i in range(int(math.log2(cfg.max_dilation)) + 1))
    return cycle * cfg.dilation_cycles


def receptive_field(cfg: WaveNetConfig) -> int:
    """Samples one output sees: itself and sum(dilations) before it (kernel 2)."""
    return (cfg.kernel_size - 1) * sum(dilations(cfg)) + 1


def frame_context(cfg: WaveNetConfig) -> tuple[int, int]:
    """Frames needed before and after a span of frames to condition it exactly: (left, right)."""
    return cfg.cond_kernel - 1 - cfg.cond_lookahead, cfg.cond_lookahead + 1


def lookahead_frames(cfg: WaveNetConfig) -> int:
    """Frames beyond the current sample's own frame that conditioning reads (conv lookahead + interpolation)."""
    return frame_context(cfg)[1]


def interpolate_frames(per_frame: torch.Tensor, hop: int) -> torch.Tensor:
    """(B, C, F + 1) frame-rate values to (B, C, F * hop): sample i*hop + k = lerp(frame i, frame i+1, k / hop)."""
    alpha = torch.arange(hop, dtype=per_frame.dtype, device=per_frame.device) / hop
    left = per_frame[:, :, :-1, None]
    right = per_frame[:, :, 1:, None]
    return (left + (right - left) * alpha).flatten(2)


class FrameNet(nn.Module):
    """Frame-rate features (B, n_mels, F + left + right) to conditioning (B, cond_channels, F + 1).

    Frames are first standardised per mel band with the training data's mean and standard deviation, kept as
    buffers beside the weights (identity until set_frame_stats). Raw log-mel frames (mean about -5.7, std 2.6 on
    the default data) would otherwise push the conditioning's tanh into saturation and leave it nearly constant.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_mels: int, cond_channels: int, kernel: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.conv = nn.Conv1d(n_mels, cond_channels, kernel_size=kernel)
        self.mix = nn.Conv1d(cond_channels, cond_channels, kernel_size=1)

    def standardise(self, frames: torch.Tensor) -> torch.Tensor:
        return (frames - self.mean[:, None]) / self.std[:, None]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mix(F.leaky_relu(self.conv(self.standardise(frames)), 0.2)))


class PitchNet(nn.Module):
    """Standardised frames (B, n_mels, F + left + right) to raw pitch outputs (B, 2, F + 1) for the pitch row at
    each frame's first sample: log2 F0 - LOG2_F0_CENTRE, and the periodicity's logit (models.pitch)."""

    def __init__(self, n_mels: int, channels: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(n_mels, channels, kernel_size=kernel)
        self.hidden = nn.Conv1d(channels, channels, kernel_size=1)
        self.out = nn.Conv1d(channels, 2, kernel_size=1)

    def forward(self, standard: torch.Tensor) -> torch.Tensor:
        return self.out(F.leaky_relu(self.hidden(F.leaky_relu(self.conv(standard), 0.2)), 0.2))


LOG2_F0_CENTRE = 7.0  # 128 Hz: the pitch head's F0 output is relative to this


def pitch_from_outputs(raw: torch.Tensor) -> torch.Tensor:
    """(B, 2, N) pitch head outputs to pitch rows (B, 2, N): F0 in Hz (clamped to the tracker's range) and
    periodicity."""
    f0 = torch.exp2(raw[:, 0] + LOG2_F0_CENTRE).clamp(pitch.F0_MIN, pitch.F0_MAX)
    return torch.stack([f0, torch.sigmoid(raw[:, 1])], dim=1)


def frame_stats(frames: np.ndarray, floor: float = 1e-3, block: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation (floored) of (N, n_mels) frames, summed in float64 block by block (the
    frames may be a memory map larger than memory)."""
    total = np.zeros(frames.shape[1])
    squares = np.zeros(frames.shape[1])
    for start in range(0, len(frames), block):
        part = np.asarray(frames[start : start + block], dtype=np.float64)
        total += part.sum(axis=0)
        squares += (part**2).sum(axis=0)
    mean = total / len(frames)
    std = np.sqrt(np.maximum(squares / len(frames) - mean**2, 0.0))
    return mean, np.maximum(std, floor)


def set_frame_stats(model: WaveNet, mean: np.ndarray, std: np.ndarray) -> None:
    """Set the frame standardisation of a model with mel conditioning."""
    assert model.frame_net is not None, "model has no local conditioning"
    model.frame_net.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    model.frame_net.std.copy_(torch.as_tensor(std, dtype=torch.float32))


def compatible_state(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """Weights saved before frames were standardised get identity statistics, which is what those models did."""
    filled = dict(state)
    for name, value in model.state_dict().items():
        if name.endswith(("frame_net.mean", "frame_net.std")) and name not in filled:
            filled[name] = torch.zeros_like(value) if name.endswith("mean") else torch.ones_like(value)
    return filled


class WaveNet(nn.Module):
    """Autoregressive WaveNet over μ-law classes, with optional speaker and mel-frame conditioning.

    Position t takes the previous sample's class and predicts sample t's class.
    """

    def __init__(self, cfg: WaveNetConfig):
        super().__init__()
        self.cfg = cfg
        layers = dilations(cfg)
        width = len(layers) * 2 * cfg.gate_channels  # every layer's gate bias, stacked
        self.embed = nn.Embedding(cfg.classes, cfg.residual_channels)
        self.blocks = nn.ModuleList(
            ResidualBlock(cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, d) for d in layers
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1),
            nn.ReLU(),
            nn.Conv1d(cfg.skip_channels, cfg.classes, 1),
        )
        self.speaker_embed: nn.Embedding | None = None
        self.speaker_proj: nn.Linear | None = None
        if cfg.speakers > 0:
            self.speaker_embed = nn.Embedding(cfg.speakers, cfg.speaker_channels)
            self.speaker_proj = nn.Linear(cfg.speaker_channels, width, bias=False)
        self.frame_net: FrameNet | None = None
        self.cond_proj: nn.Conv1d | None = None
        self.null_frame: nn.Parameter | None = None
        if cfg.mel is not None:
            self.frame_net = FrameNet(cfg.mel.n_mels, cfg.cond_channels, cfg.cond_kernel)
            self.cond_proj = nn.Conv1d(cfg.cond_channels, width, 1, bias=False)
            self.null_frame = nn.Parameter(torch.zeros(cfg.mel.n_mels))  # the learned "no features" frame
        self.pitch_net: PitchNet | None = None
        self.excitation_proj: nn.Linear | None = None
        if pitch_inputs(cfg):
            assert cfg.mel is not None
            self.pitch_net = PitchNet(cfg.mel.n_mels, cfg.cond_channels, cfg.cond_kernel)
            self.excitation_proj = nn.Linear(pitch_inputs(cfg), width, bias=False)
            nn.init.zeros_(self.excitation_proj.weight)  # a model grown from one without pitch starts as it was

    # --- conditioning -------------------------------------------------------------------------------
    def frame_conditioning(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F + left + right) padded frames to per-frame conditioning (B, cond_channels, F + 1)."""
        assert self.frame_net is not None, "model has no local conditioning"
        return self.frame_net(frames)

    def free_conditioning(self) -> torch.Tensor:
        """(cond_channels,) steady-state conditioning of an endless run of the learned null frame."""
        assert self.frame_net is not None and self.null_frame is not None
        frames = self.null_frame[None, :, None].expand(1, -1, self.cfg.cond_kernel)
        return self.frame_net(frames)[0, :, 0]

    def pitch_outputs(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F + left + right) padded frames to the pitch head's raw outputs (B, 2, F + 1)."""
        assert self.frame_net is not None and self.pitch_net is not None, "model has no pitch input"
        return self.pitch_net(self.frame_net.standardise(frames))

    def pitch_rows(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F + left + right) padded frames to predicted pitch rows (B, 2, F + 1): F0 Hz, periodicity."""
        return pitch_from_outputs(self.pitch_outputs(frames))

    def excitation_from_frames(self, frames: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_mels, F + left + right) padded frames of whole signals (and, for lag taps, their (B, F * hop) input
        classes) to the (B, pitch_inputs, F * hop) pitch inputs a stream conditioned on them gets (models.pitch):
        the pitch head's rows, the phase 0 at the first, silence before the first sample."""
        cfg = self.cfg
        assert cfg.mel is not None
        hop, rate = cfg.mel.hop, cfg.sample_rate
        _, farthest = pitch.lag_reach(rate, cfg.pitch_lag)
        out = []
        for b, (f0, periodicity) in enumerate(self.pitch_rows(frames).detach().to(torch.float64).numpy()):
            rows = np.stack([f0, periodicity, pitch.row_phases(f0, hop, rate)], axis=1)
            values = None
            if cfg.pitch_lag:  # samples -farthest .. : silence, then the inputs (inputs[0] is sample -1)
                assert inputs is not None
                classes = np.concatenate([np.full(farthest - 1, silence(cfg.classes)), inputs[b].numpy()])
                values = pitch.companded(classes, cfg.classes)
            out.append(pitch.sample_inputs(rows, values, -farthest, hop, rate, cfg.pitch_harmonics, cfg.pitch_lag,
                                           0, (len(f0) - 1) * hop))
        return torch.from_numpy(np.stack(out))

    def gate_bias_from_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, cond_channels, N) conditioning to (B, layers * 2G, N) gate biases."""
        assert self.cond_proj is not None
        return self.cond_proj(cond)

    def gate_bias_from_speaker(self, speaker: torch.Tensor) -> torch.Tensor:
        """(B,) speaker ids to (B, layers * 2G) gate biases."""
        assert self.speaker_embed is not None and self.speaker_proj is not None
        return self.speaker_proj(self.speaker_embed(speaker))

    def gate_bias(
        self,
        frames: torch.Tensor | None = None,
        speaker: torch.Tensor | None = None,
        free: torch.Tensor | None = None,
        excitation: torch.Tensor | None = None,
    ) -> GateBias:
        """Gate biases from padded frames (None: run free), speaker ids, a mask of rows that run free and the
        (B, pitch_inputs, T) pitch inputs (models.pitch; None or rows that run free: none)."""
        per_frame = per_stream = None
        if self.cfg.mel is not None:
            free_bias = self.gate_bias_from_cond(self.free_conditioning()[None, :, None])[:, :, 0]  # (1, W)
            if frames is None:
                per_stream = free_bias
            else:
                per_frame = self.gate_bias_from_cond(self.frame_conditioning(frames))  # (B, W, F + 1)
                if free is not None:  # rows that run free: the null-frame bias at every frame
                    per_frame = torch.where(free[:, None, None], free_bias[:, :, None], per_frame)
        if self.cfg.speakers > 0:
            if speaker is None:
                raise ValueError("this model needs speaker ids")
            s = self.gate_bias_from_speaker(speaker)
            per_stream = s if per_stream is None else per_stream + s
        hop = self.cfg.mel.hop if self.cfg.mel is not None else 1
        per_sample = None
        if self.excitation_proj is not None and excitation is not None and frames is not None:
            per_sample = excitation if free is None else excitation * (~free)[:, None, None]
        weight = None if per_sample is None else cast(nn.Linear, self.excitation_proj).weight
        return GateBias(per_frame, per_stream, hop, per_sample, weight)

    # --- parallel forward ---------------------------------------------------------------------------
    def forward(
        self,
        inputs: torch.Tensor,
        frames: torch.Tensor | None = None,
        speaker: torch.Tensor | None = None,
        free: torch.Tensor | None = None,
        excitation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) previous-sample classes -> (B, classes, T) logits for each position's sample."""
        return self.run_layers(inputs, self.gate_bias(frames, speaker, free, excitation))[0]

    def run_layers(self, inputs: torch.Tensor, bias: GateBias) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T) classes and their gate biases to logits and each layer's input (B, R, T)."""
        h = self.embed(inputs).transpose(1, 2)  # (B, R, T)
        skip: torch.Tensor | None = None
        layer_inputs = []
        two_g = 2 * self.cfg.gate_channels
        for i, block in enumerate(self.blocks):
            layer_inputs.append(h)
            h, s = block(h, bias.layer(slice(i * two_g, (i + 1) * two_g), inputs.shape[1]))
            skip = s if skip is None else skip + s
        assert skip is not None
        return self.head(skip), layer_inputs


@dataclass(frozen=True)
class GateBias:
    """Conditioning as gate biases: per frame (B, W, F + 1), interpolated to samples, plus per stream (B, W), plus
    per sample the (W, E) weight times the (B, E, T) excitation."""

    per_frame: torch.Tensor | None
    per_stream: torch.Tensor | None
    hop: int
    per_sample: torch.Tensor | None = None
    sample_weight: torch.Tensor | None = None

    def layer(self, channels: slice, n_samples: int) -> torch.Tensor | None:
        """(B, 2G, n_samples) bias for one layer's gate channels."""
        bias = None
        if self.per_frame is not None:
            bias = interpolate_frames(self.per_frame[:, channels], self.hop)
            if bias.shape[-1] < n_samples:
                raise ValueError(f"frames cover {bias.shape[-1]} samples, input has {n_samples}")
            bias = bias[:, :, :n_samples]
        if self.per_stream is not None:
            stream = self.per_stream[:, channels, None]
            bias = stream if bias is None else bias + stream
        if self.per_sample is not None and self.sample_weight is not None:
            if self.per_sample.shape[-1] < n_samples:
                raise ValueError(f"excitation covers {self.per_sample.shape[-1]} samples, input has {n_samples}")
            sample = torch.einsum("we,bet->bwt", self.sample_weight[channels], self.per_sample[:, :, :n_samples])
            bias = sample if bias is None else bias + sample
        return bias


def pad_frames(frames: torch.Tensor, cfg: WaveNetConfig) -> torch.Tensor:
    """(B, n_mels, F) frames of a whole signal to the zero-padded (B, n_mels, F + left + right) FrameNet input."""
    left, right = frame_context(cfg)
    return F.pad(frames, (left, right))


# --- checkpoints ------------------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not match its config."""


def config_to_dict(cfg: WaveNetConfig) -> dict[str, Any]:
    """The config as plain types, safe for weights_only loading."""
    return dataclasses.asdict(cfg)


def config_from_dict(raw: dict[str, Any]) -> WaveNetConfig:
    """Inverse of config_to_dict; rejects unknown fields."""
    known = {f.name for f in dataclasses.fields(WaveNetConfig)}
    unknown = set(raw) - known
    if unknown:
        raise CheckpointError(f"unknown config fields: {sorted(unknown)}")
    values = dict(raw)
    if values.get("mel") is not None:
        values["mel"] = MelSpec(**values["mel"])
    return WaveNetConfig(**values)


def save_checkpoint(path: str | os.PathLike[str], model: WaveNet, extra: dict[str, Any] | None = None) -> None:
    """Write config and weights (and any extra plain data) atomically."""
    payload = {"format": CHECKPOINT_FORMAT, "config": config_to_dict(model.cfg), "model": model.state_dict()}
    payload.update(extra or {})
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw checkpoint dict, loaded without unpickling arbitrary objects."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or hostile files
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, corrupt or hostile): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return payload


def checkpoint_temperature(payload: dict[str, Any]) -> float:
    """The sampling temperature a checkpoint's model is served at by default (the best rule bench/ab.py found for
    it), TEMPERATURE if it names none."""
    value = payload.get("temperature", TEMPERATURE)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < math.inf:
        raise CheckpointError(f"checkpoint temperature must be a finite number >= 0, got {value!r}")
    return float(value)


def load_checkpoint(path: str | os.PathLike[str], key: str = "model") -> WaveNet:
    """Rebuild the model from the config inside the checkpoint and load its weights (key: 'model' or 'ema')."""
    payload = read_checkpoint(path)
    try:
        cfg = config_from_dict(payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has a bad config: {exc}") from exc
    model = WaveNet(cfg)
    state = payload.get(key)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} has no '{key}' weights")
    state = compatible_state(model, state)
    missing, unexpected = _state_mismatch(model, state)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # shape mismatch
        raise CheckpointError(f"checkpoint {path} does not match its config: {exc}") from exc
    return model.eval()


def _state_mismatch(model: nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)
