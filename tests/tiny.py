"""Tiny models and data the tests build themselves."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from models.generate.reference import Generator, StreamConfig
from models.wavenet import WaveNet, WaveNetConfig, set_frame_stats
from wavenet.features import MelSpec, log_mel

TINY_MEL = MelSpec(sample_rate=1600, n_mels=8, hop=4, win=16, n_fft=16, fmin=0.0, fmax=800.0)

CONFIGS = {
    "plain": WaveNetConfig(sample_rate=1600, max_dilation=8, residual_channels=8, gate_channels=8,
                           skip_channels=16, mel=None),
    "speaker": WaveNetConfig(sample_rate=1600, max_dilation=8, residual_channels=8, gate_channels=8,
                             skip_channels=16, mel=None, speakers=3, speaker_channels=4),
    "mel": WaveNetConfig(sample_rate=1600, max_dilation=8, residual_channels=8, gate_channels=8,
                         skip_channels=16, mel=TINY_MEL, cond_channels=6),
    "both": WaveNetConfig(sample_rate=1600, max_dilation=16, dilation_cycles=3, residual_channels=12,
                          gate_channels=10, skip_channels=16, mel=TINY_MEL, cond_channels=6, cond_kernel=5,
                          cond_lookahead=2, speakers=2, speaker_channels=4),
    "pitch": WaveNetConfig(sample_rate=1600, max_dilation=8, residual_channels=8, gate_channels=8,
                           skip_channels=16, mel=TINY_MEL, cond_channels=6, speakers=2, speaker_channels=4,
                           pitch_harmonics=3),
    "lag": WaveNetConfig(sample_rate=16000, max_dilation=8, residual_channels=8, gate_channels=8, skip_channels=16,
                         mel=MelSpec(n_mels=8, hop=40, win=160, n_fft=256), cond_channels=6, speakers=2,
                         speaker_channels=4, pitch_lag=3),
}


def tiny_model(name: str, seed: int = 0) -> WaveNet:
    """A randomly initialised tiny model with non-trivial weights (biases and the null frame too)."""
    torch.manual_seed(seed)
    model = WaveNet(CONFIGS[name])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    if model.frame_net is not None:  # non-trivial frame statistics, so every path exercises the standardisation
        n_mels = model.frame_net.mean.shape[0]
        set_frame_stats(model, 0.5 * torch.randn(n_mels).numpy(), 0.5 + torch.rand(n_mels).numpy())
    return model.eval()


def random_classes(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n)


def random_frames(n: int, n_mels: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, n_mels)).astype(np.float32)


def write_prepared(root: Path, splits: dict[str, list[tuple[np.ndarray, int]]], spec: MelSpec,
                   speakers: list[str]) -> None:
    """A prepared data folder as wavenet-prepare writes it: root/meta.json and root/<split>/ for each split."""
    for split, clips in splits.items():
        folder = root / split
        folder.mkdir(parents=True)
        index, audio, frames = [], [], []
        s_off = f_off = 0
        for wav, speaker in clips:
            pcm = np.round(wav[: len(wav) // spec.hop * spec.hop] * 32767).astype(np.int16)
            mel = log_mel(pcm / 32768.0, spec)
            index.append({"key": f"xx/level/clip{len(index)}", "speaker": speaker, "sample_offset": s_off,
                          "n_samples": len(pcm), "frame_offset": f_off, "n_frames": len(mel)})
            audio.append(pcm)
            frames.append(mel)
            s_off += len(pcm)
            f_off += len(mel)
        np.save(folder / "audio.npy", np.concatenate(audio))
        np.save(folder / "frames.npy", np.concatenate(frames))
        (folder / "clips.json").write_text(json.dumps(index))
    meta = {"mel": dataclasses.asdict(spec), "sample_rate": spec.sample_rate, "speakers": speakers}
    (root / "meta.json").write_text(json.dumps(meta))


def generate_in_changing_batch(gen: Generator, config: StreamConfig, frames: np.ndarray, others: int,
                               joins: dict[int, int]) -> np.ndarray:
    """One feature stream's classes, made while its frames arrive in uneven blocks and `others` free-running
    streams of different lengths run beside it; at step k of `joins`, joins[k] more streams join (the batch and
    the rows each engine thread takes change), and at step 4 the first other stream is closed early."""
    running = [gen.open(StreamConfig(speaker=0, seed=s, length=50 + 40 * s)) for s in range(others)]
    sid = gen.open(config)
    got = []
    fed = 0
    step = 0
    while not gen.done(sid):
        if fed < len(frames):
            gen.push_frames(sid, frames[fed : fed + 7])
            fed += 7
            if fed >= len(frames):
                gen.end_frames(sid)
        running += [gen.open(StreamConfig(speaker=1, seed=99 + k, length=400)) for k in range(joins.get(step, 0))]
        if step == 4:
            gen.close(running.pop(0))
        out = gen.generate(23)
        got.append(out.get(sid, np.zeros(0, np.int64)))
        for other in list(running):
            if gen.done(other):
                gen.close(other)
                running.remove(other)
        step += 1
    return np.concatenate(got)
