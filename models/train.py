"""`wavenet-train`: train a WaveNet on prepared clips, with exact resume, EMA, validation and checkpoints."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models import emphasis, pitch
from models.cpus import default_threads
from models.wavenet import (
    LOG2_F0_CENTRE,
    TEMPERATURE,
    CheckpointError,
    WaveNet,
    WaveNetConfig,
    compatible_state,
    config_from_dict,
    config_to_dict,
    frame_context,
    frame_stats,
    pitch_inputs,
    read_checkpoint,
    save_checkpoint,
    set_frame_stats,
)
from wavenet import mulaw
from wavenet.features import MelSpec

BITS_PER_NAT = 1.0 / math.log(2.0)
SCHEDULE_FITTED = ("start",)  # TrainConfig fields --budget-minutes sets, not options
PREEMPHASIS = 0.85  # a new model's (models/emphasis.py): LPCNet's value; measured against none in MODEL_CARD.md


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved in the checkpoint beside the model config."""

    steps: int = 100_000
    batch_size: int = 4
    window: int = 8000  # samples per training example (a whole number of hops)
    lr: float = 1e-3
    lr_min: float = 1e-4
    warmup: int = 1000
    start: int = 0  # the step the schedule (warm-up, then cosine to `steps`) starts at; set by --budget-minutes
    ema: float = 0.9995
    grad_clip: float = 1.0
    free_prob: float = 0.1  # chance that an example's frames are replaced by the learned null frame
    input_noise: float = 0.0  # > 0: each example's input classes get Laplace noise of a scale drawn in [0, this)
    self_inputs: float = 0.0  # the fraction of each batch's examples whose inputs are the model's own one-step samples
    pitch_weight: float = 0.1  # weight of the pitch head's loss beside the bits (models with pitch input)
    pitch_head_steps: int = 4000  # a new pitch model's head is first fitted alone for this many steps
    bf16: bool = False  # autocast matmuls and convolutions to bfloat16 (fp32 weights and optimizer)
    valid_every: int = 1000
    valid_examples: int = 64
    checkpoint_minutes: float = 5.0
    seed: int = 0
    prefetch: int = 2  # batches made ahead in worker threads (0: on demand)
    compile: bool = False  # torch.compile the training forward: 2.5x on an H200, 0.9x on 2 CPU cores (bench/train_step)

    def __post_init__(self) -> None:
        for name, ok, rule in (
            ("steps", self.steps >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
            ("window", self.window >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"),
            ("lr_min", 0 <= self.lr_min <= self.lr, f"in [0, lr] (lr {self.lr:g})"),
            ("warmup", self.warmup >= 0, ">= 0"),
            ("start", self.start >= 0, ">= 0"), ("ema", 0 <= self.ema < 1, "in [0, 1)"),
            ("grad_clip", self.grad_clip > 0, "> 0"), ("free_prob", 0 <= self.free_prob <= 1, "in [0, 1]"),
            ("input_noise", self.input_noise >= 0, ">= 0"), ("pitch_weight", self.pitch_weight >= 0, ">= 0"),
            ("self_inputs", 0 <= self.self_inputs <= 1, "in [0, 1]"),
            ("pitch_head_steps", self.pitch_head_steps >= 0, ">= 0"),
            ("valid_every", self.valid_every >= 1, ">= 1"), ("valid_examples", self.valid_examples >= 1, ">= 1"),
            ("checkpoint_minutes", self.checkpoint_minutes >= 0, ">= 0"), ("prefetch", self.prefetch >= 0, ">= 0"),
        ):
            if not ok:
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be {rule}, got {getattr(self, name)}")


class RunError(Exception):
    """A run that cannot start as asked: its data, config or checkpoint; said in one line, exit 2."""


# --- data -------------------------------------------------------------------------------------------


@dataclass
class Split:
    """One prepared split: concatenated int16 audio, float32 frames and the clip index."""

    name: str  # train, valid or test
    audio: np.ndarray  # (samples,) int16
    frames: np.ndarray  # (frames, n_mels) float32
    clips: list[dict[str, Any]]
    pitch: np.ndarray | None = None  # (frames, 2) float32 pitch rows (models.pitch), for models with pitch input


def load_split(root: Path, name: str, with_pitch: bool = False) -> Split:
    """Memory-map a split written by wavenet-prepare; with_pitch: its pitch rows too, tracked and saved beside it
    (pitch.npy) the first time they are asked for."""
    folder = root / name
    try:
        clips = json.loads((folder / "clips.json").read_text())
        audio, frames = np.load(folder / "audio.npy", mmap_mode="r"), np.load(folder / "frames.npy", mmap_mode="r")
    except (OSError, ValueError) as exc:  # missing, or not what wavenet-prepare writes
        raise RunError(f"cannot read the {name} split of {root} ({exc}): run wavenet-prepare") from None
    split = Split(name, audio, frames, clips)
    if with_pitch:
        path = folder / "pitch.npy"
        if not path.is_file():
            meta = json.loads((root / "meta.json").read_text())
            np.save(path, track_split(split, meta["mel"]["sample_rate"], meta["mel"]["hop"]))
        split.pitch = np.load(path)
    return split


def track_split(split: Split, sample_rate: int, hop: int) -> np.ndarray:
    """(frames, 2) pitch rows of every clip of a split, aligned with its frames."""
    rows = np.zeros((len(split.frames), 2), np.float32)
    for clip in split.clips:
        audio = split.audio[clip["sample_offset"] : clip["sample_offset"] + clip["n_samples"]] / 32768.0
        rows[clip["frame_offset"] : clip["frame_offset"] + clip["n_frames"]] = pitch.track(
            audio, sample_rate, hop, clip["n_frames"])
    return rows


@dataclass(frozen=True)
class Windows:
    """A split as one model reads it: every sample's class computed once, so that cutting a batch is slicing and
    copying alone (what that saves: docs/benchmarks.md, `bench/train_step.py --data`)."""

    split: Split
    cfg: WaveNetConfig
    classes: np.ndarray  # (samples,) each sample's class, pre-emphasised within its own clip


def windows(split: Split, cfg: WaveNetConfig) -> Windows:
    """Encode a split for a model config, clip by clip: a clip's first sample's pre-emphasis reads silence, as the
    model's first input does. Pre-emphasis and μ-law are elementwise, so a window of these classes is bit for bit
    what encoding that window alone would give. Clips are encoded in parallel threads (numpy lets go of Python's
    lock while it computes): the start-up a GPU run waits for."""
    classes = np.empty(len(split.audio), np.uint8 if cfg.classes <= 256 else np.int32)

    def encode(clip: dict[str, Any]) -> None:
        span = slice(clip["sample_offset"], clip["sample_offset"] + clip["n_samples"])
        classes[span] = emphasis.encode(split.audio[span].astype(np.float32) / 32768.0, cfg.preemphasis, cfg.classes)

    with ThreadPoolExecutor(default_threads(), thread_name_prefix="encode") as pool:
        list(pool.map(encode, split.clips))
    return Windows(split, cfg, classes)


def example(w: Windows, clip: dict[str, Any], start_frame: int, n_frames_: int) -> dict[str, Any]:
    """One training window: input and target classes, padded frames and the speaker."""
    cfg = w.cfg
    assert cfg.mel is not None
    hop = cfg.mel.hop
    left, right = frame_context(cfg)
    s0 = clip["sample_offset"] + start_frame * hop
    if start_frame:  # the first input is the sample before the window
        classes = w.classes[s0 - 1 : s0 + n_frames_ * hop]
    else:  # or, at the clip's start, silence
        first = np.array([mulaw.silence(cfg.classes)], w.classes.dtype)
        classes = np.concatenate([first, w.classes[s0 : s0 + n_frames_ * hop]])
    frames = padded_frames(w.split, clip, start_frame, n_frames_, cfg)
    out = {"inputs": classes[:-1], "targets": classes[1:], "frames": frames, "speaker": clip["speaker"]}
    if pitch_inputs(cfg):
        out.update(pitch_example(w, clip, start_frame, n_frames_))
    return out


def padded_frames(split: Split, clip: dict[str, Any], start_frame: int, n_frames_: int,
                  cfg: WaveNetConfig) -> np.ndarray:
    """(n_mels, n_frames_ + left + right) frames of a window with the frame context around it, zero beyond the
    clip (as pad_frames pads a whole signal)."""
    assert cfg.mel is not None
    left, right = frame_context(cfg)
    frames = np.zeros((n_frames_ + left + right, cfg.mel.n_mels), np.float32)
    lo, hi = start_frame - left, start_frame + n_frames_ + right  # frame range, clip-relative
    src_lo, src_hi = max(lo, 0), min(hi, clip["n_frames"])
    frames[src_lo - lo : src_hi - lo] = split.frames[clip["frame_offset"] + src_lo : clip["frame_offset"] + src_hi]
    return frames.T


def pitch_rows(split: Split, clip: dict[str, Any], end: int) -> np.ndarray:
    """(end, 2) tracked pitch rows 0..end-1 of a clip, unvoiced (0) past its end."""
    assert split.pitch is not None
    rows = np.zeros((end, 2), np.float32)
    have = min(end, clip["n_frames"])
    rows[:have] = split.pitch[clip["frame_offset"] : clip["frame_offset"] + have]
    return rows


def pitch_example(w: Windows, clip: dict[str, Any], start_frame: int, n_frames_: int) -> dict[str, np.ndarray]:
    """A window's excitation (2K, n_frames_ * hop), from the clip's tracked pitch as a stream would run it from
    the clip's start (phase 0 there), and the pitch head's targets (2, n_frames_ + 1): the rows of the window's
    frames and the one after (past the clip's end: unvoiced)."""
    cfg = w.cfg
    assert cfg.mel is not None
    hop = cfg.mel.hop
    rows = pitch_rows(w.split, clip, start_frame + n_frames_ + 1)
    f0 = pitch.hold_unvoiced(rows[:, 0])
    phases = pitch.row_phases(f0, hop, cfg.sample_rate)  # one clip's rows: a few hundred
    held = np.stack([f0, rows[:, 1].astype(np.float64), phases], axis=1)[start_frame:]
    values = None
    _, farthest = pitch.lag_reach(cfg.sample_rate, cfg.pitch_lag)
    if cfg.pitch_lag:  # the clip's clean signal from `farthest` samples before the window, silence before the clip
        first = start_frame * hop - farthest
        classes = np.full(farthest + n_frames_ * hop, mulaw.silence(cfg.classes), np.int64)
        lo = max(first, 0)
        s0 = clip["sample_offset"]
        classes[lo - first :] = w.classes[s0 + lo : s0 + start_frame * hop + n_frames_ * hop]
        values = pitch.companded(classes, cfg.classes)
    excitation = pitch.sample_inputs(held, values, -farthest, hop, cfg.sample_rate, cfg.pitch_harmonics,
                                     cfg.pitch_lag, 0, n_frames_ * hop)
    return {"excitation": excitation, "pitch": rows[start_frame:].T.copy()}


HEAD_WINDOW, HEAD_BATCH, HEAD_LR = 64, 32, 3e-3  # the pitch head's own fit: frames per window, windows per step


def fit_pitch_head(model: WaveNet, split: Split, steps: int, seed: int) -> float:
    """Train the pitch head alone on a split's frames and tracked rows (Adam, cosine from HEAD_LR to 0), before a
    new pitch model's first step: the excitation the model hears at inference is then nearly the tracker's from the
    start (it trains on the tracker's). Frame rate only: seconds a thousand steps on a CPU. Returns the last loss."""
    assert model.pitch_net is not None and model.cfg.mel is not None
    rng = np.random.default_rng([seed, 7])
    window = min(HEAD_WINDOW, max(c["n_frames"] for c in split.clips))  # shorter where every clip is
    usable = [c for c in split.clips if c["n_frames"] >= window]
    optimizer = torch.optim.Adam(model.pitch_net.parameters(), lr=HEAD_LR)
    device = model.pitch_net.out.weight.device
    loss = torch.zeros(())
    for step in range(steps):
        picks = [usable[i] for i in rng.integers(0, len(usable), HEAD_BATCH)]
        starts = [int(rng.integers(0, c["n_frames"] - window + 1)) for c in picks]
        batch = {
            "frames": torch.as_tensor(np.stack([padded_frames(split, c, s, window, model.cfg)
                                                for c, s in zip(picks, starts)])),
            "pitch": torch.as_tensor(np.stack([pitch_rows(split, c, s + window + 1)[s:].T
                                               for c, s in zip(picks, starts)])),
        }
        batch = {k: v.to(device) for k, v in batch.items()}
        for group in optimizer.param_groups:
            group["lr"] = HEAD_LR * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = pitch_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Classes stay in their compact dtype until to_device."""
    batch = {
        "inputs": torch.as_tensor(np.stack([e["inputs"] for e in examples])),
        "targets": torch.as_tensor(np.stack([e["targets"] for e in examples])),
        "frames": torch.as_tensor(np.stack([e["frames"] for e in examples])),
        "speaker": torch.as_tensor([e["speaker"] for e in examples]),
    }
    for key in ("excitation", "pitch"):
        if key in examples[0]:
            batch[key] = torch.as_tensor(np.stack([e[key] for e in examples]))
    return batch


def random_batch(w: Windows, rng: np.random.Generator, batch: int, window: int) -> dict:
    """A batch of random windows, clips drawn in proportion to their length."""
    assert w.cfg.mel is not None
    n = window // w.cfg.mel.hop
    usable = [c for c in w.split.clips if c["n_frames"] >= n]
    if not usable:
        raise RunError(f"none of the {len(w.split.clips)} clips of the {w.split.name} split is as long as the window "
                       f"({window} samples, --window)")
    weights = np.array([c["n_frames"] - n + 1 for c in usable], np.float64)
    picks = rng.choice(len(usable), size=batch, p=weights / weights.sum())
    return collate([example(w, usable[i], int(rng.integers(0, usable[i]["n_frames"] - n + 1)), n) for i in picks])


def training_batch(w: Windows, tc: TrainConfig, rank: int, step: int) -> dict:
    """The batch of one step and rank: a pure function of (seed, rank, step), so batches can be made ahead of time
    and a resumed run sees the same ones. "free" marks the examples whose frames become the learned null frame."""
    rng = np.random.default_rng([tc.seed, rank, step])
    batch = random_batch(w, rng, tc.batch_size, tc.window)
    batch["free"] = torch.as_tensor(rng.random(tc.batch_size) < tc.free_prob)
    if tc.input_noise > 0:
        batch["inputs"] = noisy_inputs(batch["inputs"], rng, tc.input_noise, w.cfg.classes)
    return batch


def noisy_inputs(inputs: torch.Tensor, rng: np.random.Generator, most: float, classes: int) -> torch.Tensor:
    """(B, T) input classes plus rounded Laplace noise in the μ-law domain, each example's scale drawn uniformly in
    [0, most) (LPCNet): the model learns to go on from inputs that are not quite what it should have sampled.
    The targets stay clean."""
    scale = rng.uniform(0.0, most, size=(inputs.shape[0], 1))
    noise = np.rint(rng.laplace(0.0, 1.0, size=tuple(inputs.shape)) * scale)
    noisy = np.clip(inputs.numpy().astype(np.int64) + noise.astype(np.int64), 0, classes - 1)
    return torch.as_tensor(noisy.astype(inputs.numpy().dtype))


class BatchStream:
    """Makes the next few steps' batches in worker threads while the current step runs."""

    def __init__(self, make: Callable[[int], dict], ahead: int):
        self.make, self.ahead = make, ahead
        self.pool = ThreadPoolExecutor(max_workers=max(1, ahead), thread_name_prefix="batches")
        self.pending: dict[int, Future[dict]] = {}

    def get(self, step: int) -> dict:
        for s in range(step, step + max(1, self.ahead)):
            if s not in self.pending:
                self.pending[s] = self.pool.submit(self.make, s)
        for s in [s for s in self.pending if s < step]:  # stale after a jump (not expected in training)
            del self.pending[s]
        return self.pending.pop(step).result()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


VALID_BATCH = 4  # validation windows are drawn (and evaluated) this many at a time, whatever the training batch


def validation_batches(w: Windows, tc: TrainConfig) -> list[dict]:
    """A fixed set of validation windows, the same at every evaluation and for every training batch size (drawn
    with the training batch, batch 32 drew other windows than batch 4 and read 0.08 bits higher on the same
    weights)."""
    rng = np.random.default_rng(12345)
    n = tc.valid_examples
    return [random_batch(w, rng, min(VALID_BATCH, n - i), tc.window) for i in range(0, n, VALID_BATCH)]


# --- training ---------------------------------------------------------------------------------------


def learning_rate(step: int, tc: TrainConfig) -> float:
    """Linear warm-up from step tc.start, then cosine decay to lr_min at step tc.steps."""
    into = max(0, step - tc.start)
    if into < tc.warmup:
        return tc.lr * (into + 1) / tc.warmup
    progress = min(1.0, (into - tc.warmup) / max(1, tc.steps - tc.start - tc.warmup))
    return tc.lr_min + 0.5 * (tc.lr - tc.lr_min) * (1 + math.cos(math.pi * progress))


def loss_bits(model: Callable[..., torch.Tensor], cfg: WaveNetConfig, batch: dict[str, torch.Tensor],
              free: torch.Tensor | None, bf16: bool) -> torch.Tensor:
    """Mean cross-entropy in bits per sample; model may be a WaveNet or a wrapper of one (DDP, compiled)."""
    with torch.autocast(batch["inputs"].device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(batch["inputs"], batch["frames"], batch["speaker"] if cfg.speakers else None, free,
                       batch.get("excitation"))
    return F.cross_entropy(logits.float(), batch["targets"]) * BITS_PER_NAT


def pitch_loss(model: WaveNet, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The pitch head against the tracked rows: |log2 F0 error| where voiced, plus the periodicity's cross-entropy."""
    raw = model.pitch_outputs(batch["frames"])  # (B, 2, F + 1)
    target = batch["pitch"]
    voiced = (target[:, 0] > 0).float()
    log_f0 = torch.log2(target[:, 0].clamp(min=pitch.F0_MIN)) - LOG2_F0_CENTRE
    f0_error = ((raw[:, 0] - log_f0).abs() * voiced).sum() / voiced.sum().clamp(min=1.0)
    return f0_error + F.binary_cross_entropy_with_logits(raw[:, 1], target[:, 1])


CLASS_KEYS = ("inputs", "targets")  # collated in the classes' compact dtype; the model and the loss take int64


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch on the device, its classes as int64. To a CUDA device the copy does not wait for the
    device's queued work when the batch is pinned (a pageable one makes the host wait)."""
    moved = {k: v.to(device, non_blocking=device.type == "cuda") for k, v in batch.items()}
    return {k: v.long() if k in CLASS_KEYS else v for k, v in moved.items()}


def pinned(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch in page-locked memory, for an asynchronous copy to a CUDA device."""
    return {k: v.pin_memory() for k, v in batch.items()}


@torch.no_grad()
def evaluate(model: WaveNet, batches: list[dict], device: torch.device, free: bool = False) -> float:
    """Mean validation loss in bits per sample, in fp32 whatever the training precision (what the server runs);
    free: with every window's frames replaced by the null frame."""
    model.eval()
    total = 0.0
    for b in batches:
        mask = torch.full((b["inputs"].shape[0],), free, device=device) if model.cfg.mel is not None else None
        total += float(loss_bits(model, model.cfg, to_device(b, device), mask, bf16=False))
    model.train()
    return total / len(batches)


def ema_decay(step: int, decay: float) -> float:
    """The EMA's decay at a step, warmed up so that early averages are not dominated by the random init."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: WaveNet, model: WaveNet, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


SELF_INPUT_TEMPERATURE = 0.7  # the sampling temperature of self_inputs' samples: the service's default


def self_sampled_inputs(forward: Callable[..., torch.Tensor], cfg: WaveNetConfig, batch: dict[str, torch.Tensor],
                        tc: TrainConfig, step: int) -> torch.Tensor:
    """The batch's inputs with those of a tc.self_inputs fraction of its examples (drawn from (seed, step)) replaced
    by the model's own one-step samples: each position's input is what the model samples for it from the true
    past (one teacher-forced pass, no gradient), the first input (the sample before the window) left true. The
    targets stay true, so the model learns to go on from the errors it makes when it runs free, with their real
    shape rather than a noise model's (LPCNet injects noise for the same reason). The pitch-lag taps, made with
    the batch, still read the true signal."""
    inputs = batch["inputs"]
    g = torch.Generator().manual_seed(tc.seed * 1_000_003 + step)
    chosen = torch.rand(inputs.shape[0], generator=g) < tc.self_inputs
    if not chosen.any():
        return inputs
    rows = chosen.nonzero().squeeze(1).to(inputs.device)
    pick = {k: batch[k].index_select(0, rows) if batch.get(k) is not None else None
            for k in ("inputs", "frames", "speaker", "free", "excitation")}
    with torch.no_grad(), torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=tc.bf16):
        logits = forward(pick["inputs"], pick["frames"], pick["speaker"] if cfg.speakers else None, pick["free"],
                         pick["excitation"]).float()  # (b, classes, T)
    flat = logits.transpose(1, 2).reshape(-1, logits.shape[1])
    if SELF_INPUT_TEMPERATURE > 0:
        probs = torch.softmax(flat / SELF_INPUT_TEMPERATURE, dim=1).cpu()
        samples = torch.multinomial(probs, 1, generator=g).view(len(rows), -1).to(inputs.device)
    else:
        samples = flat.argmax(dim=1).view(len(rows), -1)
    out = inputs.clone()
    out[rows, 1:] = samples[:, :-1].to(inputs.dtype)
    return out


def optimizer_step(forward: Callable[..., torch.Tensor], model: WaveNet, ema: WaveNet,
                   optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], tc: TrainConfig,
                   step: int) -> torch.Tensor:
    """One training step: the scheduled learning rate, the loss through `forward` (the model, or a compiled or DDP
    wrapper of it), backward, gradient clip, the optimizer, the EMA; returns the loss (bits per sample)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, tc)
    if tc.self_inputs > 0:
        batch = {**batch, "inputs": self_sampled_inputs(forward, model.cfg, batch, tc, step)}
    loss = loss_bits(forward, model.cfg, batch, batch["free"], tc.bf16)
    total = loss + tc.pitch_weight * pitch_loss(model, batch) if pitch_inputs(model.cfg) else loss
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    optimizer.step()
    update_ema(ema, model, ema_decay(step, tc.ema))
    return loss


def budget_steps(step: int, steps_per_second: float, seconds_left: float, margin: float = 0.95) -> int:
    """The step at which a run going at steps_per_second should end to finish inside seconds_left (with a margin
    for validation and checkpoints), so that its learning-rate schedule decays fully within a time budget."""
    return step + max(1, int(steps_per_second * seconds_left * margin))


@dataclass
class Progress:
    """What a run has done; saved in every checkpoint."""

    step: int = 0
    samples: int = 0
    seconds: float = 0.0
    train: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (step, bits) averaged per interval
    valid: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (step, bits) with EMA weights
    # (step, bits) with EMA weights and no features: its gap to `valid` is what the mel frames are worth
    valid_free: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    pending: list[float] = dataclasses.field(default_factory=list)  # losses since the last `train` entry


class Trainer:
    """Owns model, EMA, optimizer, progress and the batch stream; checkpoints what exact resume needs."""

    def __init__(self, cfg: WaveNetConfig, tc: TrainConfig, data: Path, out: Path, device: torch.device,
                 rank: int = 0, world: int = 1, fresh: bool = True):
        self.cfg, self.tc, self.out, self.device, self.rank, self.world = cfg, tc, out, device, rank, world
        torch.manual_seed(tc.seed)
        train = load_split(data, "train", with_pitch=pitch_inputs(cfg) > 0)
        self.model = WaveNet(cfg)
        if cfg.mel is not None and fresh:  # a resumed run (fresh=False) loads the statistics it started with
            set_frame_stats(self.model, *frame_stats(train.frames))
        self.model.to(device)
        self.ema = copy.deepcopy(self.model).eval()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=0.0)
        self.progress = Progress()
        # this process's seconds in run() (validation and checkpoints included), and the part of them spent
        # waiting for the workers' next batch and handing it to the device: a lower bound on what the input costs a
        # fast device (workers that slow the main thread down show up in the steps instead)
        self.run_seconds = self.input_wait = 0.0
        self.train_windows = windows(train, cfg)
        self.batches = BatchStream(self.make_batch, tc.prefetch)
        self.valid = validation_batches(windows(load_split(data, "valid", pitch_inputs(cfg) > 0), cfg), tc)
        self.distributed = distributed()
        self.ddp: torch.nn.Module = self.model
        if self.distributed:
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model)
        self.train_forward: Callable[..., torch.Tensor] = torch.compile(self.ddp) if tc.compile else self.ddp

    def state(self) -> dict[str, Any]:
        return {
            "ema": self.ema.state_dict(),
            "train_config": dataclasses.asdict(self.tc),
            "optimizer": self.optimizer.state_dict(),
            "progress": dataclasses.asdict(self.progress),
            "rng": {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate())},
        }

    def save(self) -> Path:
        path = self.out / "checkpoint.pt"
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, self.model, self.state())
            plot_curves(self.progress, self.out / "loss.png")
        return path

    def resume(self, path: Path) -> None:
        payload = read_checkpoint(path)
        self.model.load_state_dict(compatible_state(self.model, payload["model"]))
        self.ema.load_state_dict(compatible_state(self.ema, payload["ema"]))
        self.optimizer.load_state_dict(payload["optimizer"])
        raw = payload["progress"]
        curves = {k: [(int(step), float(bits)) for step, bits in raw.get(k, [])]
                  for k in ("train", "valid", "valid_free")}
        self.progress = Progress(raw["step"], raw["samples"], raw["seconds"], **curves,
                                 pending=list(raw.get("pending", [])))
        torch.set_rng_state(payload["rng"]["torch"])
        state = json.loads(payload["rng"]["python"])
        random.setstate((state[0], tuple(state[1]), state[2]))

    def init_from(self, path: Path) -> list[str]:
        """Start from another checkpoint's weights (its EMA ones too, if it has them) wherever a name and shape
        match; the rest keep their initialisation (a new input's zero weights). Returns the names not taken."""
        payload = read_checkpoint(path)
        taken: list[str] = []
        for module, key in ((self.model, "model"), (self.ema, "ema" if "ema" in payload else "model")):
            own = module.state_dict()
            given = {k: v for k, v in compatible_state(module, payload[key]).items()
                     if k in own and own[k].shape == v.shape}
            module.load_state_dict(given, strict=False)
            taken = sorted(set(own) - set(given))
        return taken

    def fit_pitch_head(self) -> None:
        """A new pitch head, fitted alone (the same in every process: same seed, same data), into the EMA too."""
        started = time.monotonic()
        loss = fit_pitch_head(self.model, self.train_windows.split, self.tc.pitch_head_steps, self.tc.seed)
        assert self.model.pitch_net is not None and self.ema.pitch_net is not None
        self.ema.pitch_net.load_state_dict(self.model.pitch_net.state_dict())
        if self.rank == 0:
            print(f"pitch head: fitted alone for {self.tc.pitch_head_steps} steps in {time.monotonic() - started:.0f} "
                  f"s, loss {loss:.3f}", file=sys.stderr)

    def make_batch(self, step: int) -> dict[str, torch.Tensor]:
        """A step's batch on the host (in a BatchStream worker), page-locked when it is bound for a GPU."""
        batch = training_batch(self.train_windows, self.tc, self.rank, step)
        return pinned(batch) if self.device.type == "cuda" else batch

    def next_batch(self) -> dict[str, torch.Tensor]:
        return to_device(self.batches.get(self.progress.step), self.device)

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        loss = optimizer_step(self.train_forward, self.model, self.ema, self.optimizer, batch, self.tc,
                              self.progress.step)
        self.progress.step += 1
        self.progress.samples += batch["inputs"].numel() * self.world
        return float(loss.detach())

    def any_rank(self, flag: bool) -> bool:
        """Whether any process has the flag (a stop request): all processes must stop at the same step."""
        if not self.distributed:
            return flag
        value = torch.tensor(float(flag), device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def validate(self) -> None:
        step = self.progress.step
        self.progress.valid.append((step, evaluate(self.ema, self.valid, self.device)))
        if self.cfg.mel is not None:
            self.progress.valid_free.append((step, evaluate(self.ema, self.valid, self.device, free=True)))

    def run(self, until: int, stop: list[bool], show: bool = True, checkpoint: bool = True) -> list[float]:
        """Train until step `until` (or a stop request), checkpointing every few minutes and at the end (neither
        without `checkpoint`: the budget probe's steps run under a half-made schedule); the losses of the steps run."""
        from tqdm import tqdm

        losses: list[float] = []
        last_save = time.monotonic()
        bar = tqdm(total=until, initial=self.progress.step, disable=not show or self.rank != 0, unit="step",
                   dynamic_ncols=True)
        started, start_samples = time.monotonic(), self.progress.samples
        clock = time.monotonic()
        while self.progress.step < until and not self.any_rank(stop[0]):
            fetch = time.monotonic()
            batch = self.next_batch()
            self.input_wait += time.monotonic() - fetch
            loss = self.train_step(batch)
            now = time.monotonic()
            self.progress.seconds += now - clock
            clock = now
            losses.append(loss)
            self.progress.pending.append(loss)
            step = self.progress.step
            if step % 50 == 0 or step == self.tc.steps:  # not at a run's end: a resumed run logs as one that ran on
                self.progress.train.append((step, float(np.mean(self.progress.pending))))
                self.progress.pending = []
            if step % self.tc.valid_every == 0 or step == self.tc.steps:
                self.validate()
            rate = (self.progress.samples - start_samples) / max(1e-9, now - started)
            valid = f"{self.progress.valid[-1][1]:.3f}" if self.progress.valid else "-"
            if self.progress.valid_free:
                valid += f" (free {self.progress.valid_free[-1][1]:.3f})"
            bar.set_postfix_str(f"loss {loss:.3f} bits  valid {valid}  {rate:,.0f} samples/s", refresh=False)
            bar.update(1)
            if checkpoint and now - last_save > 60 * self.tc.checkpoint_minutes:
                self.save()
                last_save = now
        bar.close()
        self.run_seconds += time.monotonic() - started
        if checkpoint:
            self.save()
        return losses


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint that train.py wrote (model, EMA, optimizer, progress); RunError for a serving model."""
    payload = read_checkpoint(path)
    if "train_config" not in payload:
        raise RunError(f"{path} is a serving model, not a training checkpoint (a run's --out holds one)")
    return payload


def export_model(checkpoint: Path, out: Path, speakers: list[str], weights: str = "ema",
                 temperature: float = TEMPERATURE) -> dict[str, Any]:
    """Write the EMA (or raw) weights of a training checkpoint as a serving checkpoint, with speakers, provenance
    and the temperature it is sampled at by default."""
    payload = read_training_checkpoint(checkpoint)
    model = WaveNet(config_from_dict(payload["config"]))
    if len(speakers) != model.cfg.speakers:
        raise RunError(f"the data names {len(speakers)} speakers, the model in {checkpoint} has "
                       f"{model.cfg.speakers}: --data must be the data it was trained on")
    model.load_state_dict(compatible_state(model, payload[weights]))
    progress = payload["progress"]
    trained = {"step": progress["step"], "samples": progress["samples"], "seconds": progress["seconds"],
               "valid_bits": progress["valid"][-1][1] if progress["valid"] else None,
               "valid_bits_free": progress["valid_free"][-1][1] if progress.get("valid_free") else None,
               "train_config": payload["train_config"], "weights": weights}
    save_checkpoint(out, model, {"speakers": speakers, "trained": trained, "temperature": temperature})
    return trained


def evaluate_checkpoint(checkpoint: Path, data: Path, device: torch.device) -> dict[str, Any]:
    """Validation loss (bits per sample, the run's fixed windows, fp32) of a training checkpoint's raw ("model") and
    EMA ("ema") weights, with the windows' frames and, for a model with frames, running free: which weights to
    export (each schedule's end has favoured the raw ones, MODEL_CARD.md)."""
    payload = read_training_checkpoint(checkpoint)
    cfg = config_from_dict(payload["config"])
    tc = train_config_from(argparse.Namespace(), payload["train_config"])
    batches = validation_batches(windows(load_split(data, "valid", pitch_inputs(cfg) > 0), cfg), tc)
    losses: dict[str, dict[str, float]] = {}
    for key in ("model", "ema"):
        model = WaveNet(cfg)
        model.load_state_dict(compatible_state(model, payload[key]))
        model.to(device)
        losses[key] = {"frames": evaluate(model, batches, device)}
        if cfg.mel is not None:
            losses[key]["free"] = evaluate(model, batches, device, free=True)
    return {"checkpoint": str(checkpoint), "step": payload["progress"]["step"], "valid_bits": losses}


def plot_curves(progress: Progress, path: Path) -> None:
    """Training and validation loss (bits per sample) against step, as a PNG."""
    if not progress.train:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*progress.train), label="train", alpha=0.6)
    if progress.valid:
        ax.plot(*zip(*progress.valid), label="valid (EMA)", marker="o")
    if progress.valid_free:
        ax.plot(*zip(*progress.valid_free), label="valid (EMA), no features", marker="x", linestyle="--")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per sample")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- command line -----------------------------------------------------------------------------------


def model_config_from(args: argparse.Namespace, meta: dict[str, Any]) -> WaveNetConfig:
    """The model config: a JSON file if given, else defaults, with speakers and mel spec from the data (a file may
    not give others); a new model learns pre-emphasised audio unless the file says otherwise."""
    raw: dict[str, Any] = {}
    if args.config:
        try:
            raw = json.loads(Path(args.config).read_text())
        except OSError as exc:
            raise RunError(f"cannot read --config {args.config}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise RunError(f"--config {args.config} is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise RunError(f"--config {args.config} must hold a JSON object of WaveNetConfig fields")
    data_mel = dataclasses.asdict(MelSpec(**meta["mel"]))
    for name, value in (("mel", data_mel), ("sample_rate", meta["mel"]["sample_rate"])):
        if raw.get(name, value) != value:
            raise RunError(f"--config {args.config}: {name} is the data's ({json.dumps(value)}), not "
                           f"{json.dumps(raw[name])}: leave it out")
        raw[name] = value
    raw.setdefault("speakers", len(meta["speakers"]))
    raw.setdefault("preemphasis", PREEMPHASIS)
    try:
        return config_from_dict(raw)
    except (CheckpointError, TypeError, ValueError) as exc:
        raise RunError(f"--config {args.config}: {exc}") from None


def check_resumable(saved: dict[str, Any], checkpoint: Path, meta: dict[str, Any]) -> WaveNetConfig:
    """The config of a training checkpoint that can go on training on this data; RunError saying why not."""
    cfg = config_from_dict(saved["config"])
    data_mel = MelSpec(**meta["mel"])
    if cfg.mel != data_mel or cfg.speakers != len(meta["speakers"]):
        raise RunError(f"{checkpoint} was trained on other data (mel {cfg.mel}, {cfg.speakers} speakers) than "
                       f"this data's (mel {data_mel}, {len(meta['speakers'])} speakers)")
    return cfg


def fit_schedule_to_budget(trainer: Trainer, stop: list[bool], deadline: float, probe: int = 30,
                           warmup: int | None = None) -> None:
    """Start a new schedule at the current step, the whole of it inside the budget: run `probe` untimed steps and
    `probe` timed ones (the first of its warm-up), then end it where the measured rate reaches the deadline, with
    the warm-up a tenth of it, at most `warmup` (default: the run's) and otherwise at least the probe's steps (they
    ran under it). A resumed run thus restarts from its warm-up to the peak learning rate rather than part-way down
    a cosine counted from step 0. Under torchrun every process takes
    the smallest end step. A stop requested during the probe leaves the schedule as it was."""
    before, start = trainer.tc, trainer.progress.step
    ceiling = before.warmup if warmup is None else warmup
    trainer.tc = dataclasses.replace(before, start=start, warmup=ceiling)
    trainer.run(start + probe, stop, show=False, checkpoint=False)
    started, first = time.monotonic(), trainer.progress.step
    trainer.run(first + probe, stop, show=False, checkpoint=False)
    if trainer.any_rank(stop[0]):
        trainer.tc = before
        return
    now = time.monotonic()
    rate = (trainer.progress.step - first) / max(1e-9, now - started)
    steps = budget_steps(trainer.progress.step, rate, deadline - now)
    if trainer.distributed:
        agreed = torch.tensor(steps, device=trainer.device)
        torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
        steps = int(agreed.item())
    fitted = min(ceiling, max(trainer.progress.step - start, (steps - start) // 10))
    trainer.tc = dataclasses.replace(trainer.tc, steps=steps, warmup=fitted)
    if trainer.rank == 0:
        print(f"budget: {rate:.2f} steps/s, schedule from step {start} to {steps} (warm-up {fitted})",
              file=sys.stderr)


def cpu_bf16_is_emulated() -> bool:
    """Whether this CPU lacks native bf16 (AVX512_BF16 or AMX), so that bf16 autocast is emulated: a forward and
    backward pass of the default model took 9x as long as in fp32 on an AMD EPYC with AVX2 only."""
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)  # private: absent means "no warning"
    return supported is not None and not supported()


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def train_config_from(args: argparse.Namespace, saved: dict[str, Any] | None) -> TrainConfig:
    """The resumed run's settings (defaults for a new run), with those given on the command line on top: resuming
    without options continues the same schedule, a fitted --budget-minutes one included."""
    base = dataclasses.asdict(TrainConfig())
    base.update({k: v for k, v in (saved or {}).items() if k in base})
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return TrainConfig(**{**base, **given})


def at_least_zero(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a number of that kind, >= 0."""
    def parse(text: str) -> int | float:
        value = kind(text)
        if not value >= 0:  # NaN too
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the kind in "invalid float value"
    return parse


COMMANDS = ("run", "evaluate", "export")
LEGACY = {"--export-weights": "--weights", "--export-temperature": "--temperature"}  # flags of the export command


def with_command(argv: list[str]) -> list[str]:
    """argv with its command first: as given; for the older flags --export PATH and --evaluate, the command they
    stood for (with a warning); otherwise run."""
    if argv and argv[0] in (*COMMANDS, "-h", "--help"):
        return argv
    args = [a for arg in argv for a in (arg.split("=", 1) if arg.startswith("--") and "=" in arg else [arg])]
    if "--export" in args:
        at = args.index("--export")
        command, rest = ["export", *args[at + 1 : at + 2]], args[:at] + args[at + 2 :]
    elif "--evaluate" in args:
        at = args.index("--evaluate")
        command, rest = ["evaluate"], args[:at] + args[at + 1 :]
    else:
        return ["run", *argv]
    print(f"wavenet-train: warning: {args[at]} is now the command `wavenet-train {command[0]}`", file=sys.stderr)
    return [*command, *(LEGACY.get(a, a) for a in rest)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """`wavenet-train [run] ...`, `wavenet-train evaluate ...`, `wavenet-train export PATH ...`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default="data/fillets", help="folder written by wavenet-prepare")
    common.add_argument("--out", default="runs/default", help="the run's folder: checkpoints, loss curve")
    common.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p = argparse.ArgumentParser(prog="wavenet-train", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", parents=[common], help="train (the default command): a new run or a resumed one")
    run.add_argument("--config", help="JSON file of WaveNetConfig fields for a new run (default: WaveNetConfig's, "
                                      f"but pre-emphasis {PREEMPHASIS} unless the file gives 'preemphasis')")
    run.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="continue from OUT/checkpoint.pt when it exists")
    run.add_argument("--init", metavar="CHECKPOINT",
                     help="a new run starts from this checkpoint's weights where names and shapes match (a model "
                          "grown by --config, e.g. with pitch input, keeps the rest's initialisation)")
    run.add_argument("--threads", type=at_least_zero(int), default=0, help="CPU threads (0: torch's default)")
    run.add_argument("--minutes", type=at_least_zero(float), default=0,
                     help="stop after this many minutes (0: no limit)")
    run.add_argument("--budget-minutes", type=at_least_zero(float), default=0,
                     help="train for this many minutes with the whole learning-rate schedule inside them: measure "
                          "the step rate over the first steps, then set --steps so the cosine decay ends at the "
                          "deadline")
    for f in dataclasses.fields(TrainConfig):  # unset: the resumed run's value, else the default
        if f.name in SCHEDULE_FITTED:
            continue
        flag, note = f"--{f.name.replace('_', '-')}", f"default {f.default}; a resumed run keeps its own"
        if f.type in ("bool", bool):
            run.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=note)
        else:
            run.add_argument(flag, type=type(f.default), default=None, help=note)
    commands.add_parser("evaluate", parents=[common],
                        help="print the validation loss of OUT/checkpoint.pt's raw and EMA weights (one JSON line)")
    export = commands.add_parser("export", parents=[common],
                                 help="write OUT/checkpoint.pt's weights as a model to serve")
    export.add_argument("path", metavar="PATH", help="the model file to write")
    export.add_argument("--weights", choices=("ema", "model"), default="ema",
                        help="the EMA weights (default) or the raw ones")
    export.add_argument("--temperature", type=at_least_zero(float), default=TEMPERATURE,
                        help="the sampling temperature stored as the model's default (bench/ab.py finds it)")
    given = sys.argv[1:] if argv is None else list(argv)
    commanded = with_command(given)
    if commanded[0] != "run" and commanded[0] not in given[:1]:  # an older --export or --evaluate line: the
        return p.parse_known_args(commanded)[0]  # training flags it may carry were ignored then, and are now
    return p.parse_args(commanded)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_command(args)
    except (RunError, CheckpointError) as exc:
        print(f"wavenet-train: {exc}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    data, out = Path(args.data), Path(args.out)
    if not (data / "meta.json").is_file():
        raise RunError(f"no prepared data in {data} (run wavenet-prepare first)")
    meta = json.loads((data / "meta.json").read_text())
    checkpoint = out / "checkpoint.pt"
    if args.command == "export":
        trained = export_model(checkpoint, Path(args.path), meta["speakers"], args.weights, args.temperature)
        print(f"wrote {args.path}: step {trained['step']}, {trained['samples']:,} samples seen", file=sys.stderr)
        return 0
    if args.command == "evaluate":
        print(json.dumps(evaluate_checkpoint(checkpoint, data, torch.device(args.device))))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(args.device)
    resuming = args.resume and checkpoint.is_file()
    saved = read_training_checkpoint(checkpoint) if resuming else None
    cfg = check_resumable(saved, checkpoint, meta) if saved else model_config_from(args, meta)
    try:
        tc = train_config_from(args, saved["train_config"] if saved else None)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    del saved
    if cfg.mel is not None and tc.window < cfg.mel.hop:
        raise RunError(f"window (--window) must be at least one hop ({cfg.mel.hop} samples), got {tc.window}")
    if resuming and args.config and rank == 0:
        print(f"wavenet-train: warning: --config ignored: resuming {checkpoint} with its own model config "
              "(--no-resume starts afresh)", file=sys.stderr)
    # fixed window shapes: let cuDNN pick its fastest convolutions (on a GPU, resume is then exact only up to
    # cuDNN's own nondeterminism; on the CPU it is bit-exact)
    torch.backends.cudnn.benchmark = True
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    if tc.bf16 and device.type == "cpu" and cpu_bf16_is_emulated() and rank == 0:
        print("wavenet-train: warning: bf16 on this CPU is emulated (no AVX512_BF16 or AMX) and far slower than "
              "fp32; add --no-bf16", file=sys.stderr)
    trainer = Trainer(cfg, tc, data, out, device, rank, world, fresh=not resuming)
    if resuming:
        trainer.resume(checkpoint)
        print(f"resumed {checkpoint} at step {trainer.progress.step}", file=sys.stderr)
    else:
        fresh = [name for name, _ in trainer.model.named_parameters()]
        if args.init:
            fresh = trainer.init_from(Path(args.init))
            if rank == 0:
                print(f"weights from {args.init}; new: {', '.join(fresh) or 'none'}", file=sys.stderr)
        if rank == 0:
            print(f"model config: {json.dumps(config_to_dict(cfg))}", file=sys.stderr)
        if pitch_inputs(cfg) and any(name.startswith("pitch_net.") for name in fresh) and tc.pitch_head_steps:
            trainer.fit_pitch_head()

    stop = [False]

    def request_stop(_signum: int, _frame: object) -> None:
        stop[0] = True  # finish the step, checkpoint, exit

    handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    minutes = min(m for m in (args.minutes, args.budget_minutes, math.inf) if m > 0)
    try:
        if minutes < math.inf:  # the hard stop; a budget's schedule ends 5 % before it
            signal.setitimer(signal.ITIMER_REAL, 60 * minutes)
        if args.budget_minutes:
            # a new schedule's warm-up: --warmup, else the default (not a previous fit's, which a tenth may have cut)
            ceiling = args.warmup if args.warmup is not None else TrainConfig.warmup
            fit_schedule_to_budget(trainer, stop, deadline=time.monotonic() + 60 * minutes, warmup=ceiling)
        trainer.run(trainer.tc.steps, stop)
    finally:
        # disarm the hard stop: under torchrun the processes stop at the first one's alarm, and another's, still
        # armed, killed it on its way out (exit -14, a failed job)
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    trainer.batches.close()
    print(f"checkpoint {trainer.out / 'checkpoint.pt'} at step {trainer.progress.step}; waited for batches "
          f"{trainer.input_wait:.1f} s of {trainer.run_seconds:.1f} s "
          f"({trainer.input_wait / max(trainer.run_seconds, 1e-9):.1%})", file=sys.stderr)
    if distributed():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
