"""Vocoder quality on the test split: PESQ-wb, mel-cepstral distortion and log-mel distance against the original.

Each test clip is vocoded from its own log-mel frames (conditioned on the clip's speaker) and compared with the
original, beside the same numbers for two references:
  - the μ-law copy: the original through 8-bit μ-law and back (the ceiling for a 256-class model), and for a model
    with pre-emphasis, the copy through its pre-emphasis, μ-law and the inverse filter (that model's ceiling);
  - Griffin-Lim from the same frames: mel magnitudes to linear ones through the filterbank's pseudo-inverse, then
    64 iterations of fast Griffin-Lim (momentum 0.99; --gl-momentum 0 for the classic algorithm) from random phases,
    on this project's STFT framing (wavenet/features.py) with the least-squares inverse STFT.

Prints a table, then one JSON line. Run from the repository root:
    python bench/quality.py                     # every test clip (slow: the whole split is generated)
    python bench/quality.py --clips 5 --write-examples runs/examples
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from tqdm import tqdm

from models import emphasis, pitch
from models.generate.reference import Generator, StreamConfig
from models.wavenet import (
    WaveNet,
    checkpoint_temperature,
    config_from_dict,
    load_checkpoint,
    pitch_inputs,
    read_checkpoint,
)
from wavenet import mulaw
from wavenet.features import MelSpec, log_mel, mel_filterbank

PESQ_RATE = 16000  # wide-band PESQ (ITU-T P.862.2) is defined at 16 kHz
MCD_ORDER = 24  # mel-cepstral coefficients c1..c24 (c0, the level, excluded)
GL_ITERATIONS = 64
GL_MOMENTUM = 0.99  # fast Griffin-Lim (Perraudin et al. 2013), as librosa's default; 0 is the classic algorithm
CHUNK = 4000  # generation steps per call: new streams join between calls
F0_RANGE = (60.0, 400.0)  # Hz searched for the period: adult speech
F0_STEP = 0.010  # s between pitch frames
F0_WINDOW = 0.025  # s integrated per lag (YIN's window: over one period of the lowest F0)
YIN_THRESHOLD = 0.15  # the first lag whose normalised difference dips below this is the period (de Cheveigné 2002)
VOICED_BELOW = 0.25  # a frame is voiced where the normalised difference at its period is below this ...
SILENCE_DB = -40.0  # ... and its level is within this of the clip's loudest frame
SILENCE_DBFS = -70.0  # ... and above this absolute level (digital silence is not voiced)
GPE_TOLERANCE = 0.2  # a gross pitch error: F0 off by more than 20 %

METHODS = {"model": "model (vocoded)", "mulaw_copy": "μ-law 8-bit copy", "emphasis_copy": "μ-law copy, pre-emphasis",
           "griffin_lim": "Griffin-Lim"}
METRICS = ("pesq_wb", "mcd_db", "log_mel_distance", "gpe", "vde")
DEFINITIONS = {
    "pesq_wb": "ITU-T P.862.2 wide-band PESQ (MOS-LQO) of the output against the original at 16 kHz (`pesq` "
    "package; other rates are resampled with soxr first); mean over clips",
    "mcd_db": f"mel-cepstral distortion: c_m = (1/K) sum_k L_k cos(pi m (k + 1/2) / K), m = 1..{MCD_ORDER} (c0 "
    "excluded), of the natural-log mel magnitudes L (K bands, wavenet.features.log_mel) of the output and of the "
    f"original; MCD = 10/ln10 * sqrt(2 * sum_m (c_m - c'_m)^2) dB per frame, frames aligned 1:1, mean over all "
    "frames of a clip, then mean over clips",
    "log_mel_distance": "RMS over all frames and bands of log_mel(output) - log_mel(original) (natural log, "
    "wavenet.features.log_mel recomputed from each waveform); mean over clips",
    "gpe": f"gross pitch error: of the {F0_STEP * 1000:g} ms frames voiced in both the output and the original, the "
    f"fraction whose F0 differs by more than {GPE_TOLERANCE:.0%}; F0 and voicing by YIN ({F0_RANGE[0]:g}-"
    f"{F0_RANGE[1]:g} Hz, threshold {YIN_THRESHOLD}, voiced where the normalised difference at the period is below "
    f"{VOICED_BELOW} and the level within {-SILENCE_DB:g} dB of the clip's loudest frame and above {SILENCE_DBFS:g} "
    "dBFS); mean over clips",
    "vde": "voicing decision error: the fraction of all frames voiced in one of the output and the original but not "
    "the other (the same YIN); mean over clips",
    "frames_pitch_gpe": "GPE of an F0 read from the frames alone (the peak, at lags in the same range, of the "
    "autocorrelation of the power spectrum through the filterbank's pseudo-inverse) against YIN on the original, over "
    "the original's voiced frames: how much of the pitch the frames carry; mean over clips",
}


# --- inverse STFT and Griffin-Lim on wavenet.features' framing --------------------------------------------------


@lru_cache(maxsize=8)
def analysis_window(spec: MelSpec) -> np.ndarray:
    """The n_fft-long window of wavenet.features: a periodic Hann of `win` samples centred, zeros around it."""
    window = np.zeros(spec.n_fft)
    start = (spec.n_fft - spec.win) // 2
    window[start : start + spec.win] = np.hanning(spec.win + 1)[:-1]
    window.setflags(write=False)
    return window


def _frame_index(count: int, spec: MelSpec) -> np.ndarray:
    """(count, n_fft) indices into the padded signal (spec.n_fft // 2 zeros in front) that frame i reads."""
    starts = np.arange(count) * spec.hop + spec.hop // 2  # centre i*hop + hop/2, minus half, plus half of padding
    return starts[:, None] + np.arange(spec.n_fft)[None, :]


def stft(wav: np.ndarray, spec: MelSpec) -> np.ndarray:
    """(frames, n_fft // 2 + 1) complex STFT on log_mel's frame grid: abs() of it is wavenet.features.magnitudes."""
    wav = np.asarray(wav, dtype=np.float64)
    count = len(wav) // spec.hop
    half = spec.n_fft // 2
    padded = np.pad(wav, (half, half + spec.hop))
    return np.fft.rfft(padded[_frame_index(count, spec)] * analysis_window(spec), n=spec.n_fft, axis=1)


@lru_cache(maxsize=64)
def _window_sum(count: int, spec: MelSpec) -> np.ndarray:
    """Sum of squared windows over the padded signal of `count` frames (the overlap-add normaliser)."""
    index = _frame_index(count, spec)
    length = count * spec.hop + spec.n_fft + spec.hop
    total = np.bincount(index.ravel(), weights=np.tile(analysis_window(spec) ** 2, count), minlength=length)
    total.setflags(write=False)
    return total


def istft(spectrum: np.ndarray, spec: MelSpec) -> np.ndarray:
    """(frames * hop,) float64 signal whose stft() is closest to `spectrum` in the least-squares sense.

    Each frame is inverse-transformed, windowed again and overlap-added; the sum is divided by the sum of squared
    windows (Griffin & Lim 1984), so istft(stft(x)) == x.
    """
    count = spectrum.shape[0]
    frames = np.fft.irfft(spectrum, n=spec.n_fft, axis=1) * analysis_window(spec)
    index = _frame_index(count, spec)
    length = count * spec.hop + spec.n_fft + spec.hop
    summed = np.bincount(index.ravel(), weights=frames.ravel(), minlength=length)
    norm = _window_sum(count, spec)
    out = np.where(norm > 1e-8, summed / np.maximum(norm, 1e-8), 0.0)
    half = spec.n_fft // 2
    return out[half : half + count * spec.hop]


@lru_cache(maxsize=8)
def _filterbank_pinv(spec: MelSpec) -> np.ndarray:
    inverse = np.linalg.pinv(mel_filterbank(spec).astype(np.float64))  # (bins, n_mels)
    inverse.setflags(write=False)
    return inverse


def mel_to_magnitudes(frames: np.ndarray, spec: MelSpec) -> np.ndarray:
    """(frames, bins) linear STFT magnitudes from log-mel frames: exp, the filterbank's pseudo-inverse, clipped at 0."""
    mel = np.exp(np.asarray(frames, np.float64))
    return np.maximum(mel @ _filterbank_pinv(spec).T, 0.0)


def griffin_lim(
    frames: np.ndarray,
    spec: MelSpec,
    iterations: int = GL_ITERATIONS,
    momentum: float = GL_MOMENTUM,
    seed: int = 0,
) -> np.ndarray:
    """(frames * hop,) float32 waveform from log-mel frames by (fast) Griffin-Lim from random phases."""
    magnitude = mel_to_magnitudes(frames, spec)
    rng = np.random.default_rng(seed)
    angles = np.exp(2j * np.pi * rng.random(magnitude.shape))
    rebuilt = np.zeros_like(angles)
    for _ in range(iterations):
        previous = rebuilt
        rebuilt = stft(istft(magnitude * angles, spec), spec)
        angles = rebuilt - (momentum / (1.0 + momentum)) * previous
        angles /= np.abs(angles) + 1e-16
    return np.clip(istft(magnitude * angles, spec), -1.0, 1.0).astype(np.float32)


# --- metrics ----------------------------------------------------------------------------------------------------


def mel_cepstrum(frames: np.ndarray, order: int = MCD_ORDER) -> np.ndarray:
    """(frames, order) cepstral coefficients c1..c_order of natural-log mel magnitudes (see DEFINITIONS)."""
    k = frames.shape[1]
    m = np.arange(1, order + 1)
    basis = np.cos(np.pi * m[:, None] * (np.arange(k)[None, :] + 0.5) / k) / k  # (order, K)
    return np.asarray(frames, np.float64) @ basis.T


def mcd_db(reference: np.ndarray, output: np.ndarray, order: int = MCD_ORDER) -> float:
    """Mean over 1:1-aligned frames of 10/ln10 * sqrt(2 * sum (c_m - c'_m)^2), m = 1..order."""
    diff = mel_cepstrum(reference, order) - mel_cepstrum(output, order)
    return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum(diff**2, axis=1))))


def log_mel_distance(reference: np.ndarray, output: np.ndarray) -> float:
    """RMS over frames and bands of the difference of two (frames, n_mels) natural-log mel arrays."""
    return float(np.sqrt(np.mean((np.asarray(reference, np.float64) - np.asarray(output, np.float64)) ** 2)))


def lag_range(rate: int) -> tuple[int, int]:
    """The shortest and longest period searched, in samples: F0_RANGE at `rate`."""
    return int(rate / F0_RANGE[1]), int(math.ceil(rate / F0_RANGE[0]))


Pitch = tuple[np.ndarray, np.ndarray]  # yin()'s (F0 in Hz, 0 where unvoiced; voiced) per frame


def yin(wav: np.ndarray, rate: int) -> Pitch:
    """(F0 in Hz, voiced) per F0_STEP frame of `wav` by YIN (de Cheveigné & Kawahara 2002), without interpolation.

    Frame i integrates F0_WINDOW seconds from sample i * step against the same window `lag` samples later; the
    period is the first lag in F0_RANGE where the cumulative-mean-normalised difference d' dips below
    YIN_THRESHOLD (the bottom of that dip), or else where d' is least in range. F0 is 0 where a frame is unvoiced.
    """
    wav = np.asarray(wav, np.float64)
    step, window = round(F0_STEP * rate), round(F0_WINDOW * rate)
    lo, hi = lag_range(rate)
    count = max(0, (len(wav) - window - hi) // step + 1)
    if count == 0:
        return np.zeros(0), np.zeros(0, bool)
    span = np.lib.stride_tricks.sliding_window_view(wav, window + hi)[::step][:count]  # (count, window + hi)
    n = 1 << int(math.ceil(math.log2(2 * window + hi)))
    cross = np.fft.irfft(np.conj(np.fft.rfft(span[:, :window], n)) * np.fft.rfft(span, n), n)[:, : hi + 1]
    energy = np.concatenate([np.zeros((count, 1)), np.cumsum(span**2, axis=1)], axis=1)
    shifted = energy[:, window : window + hi + 1] - energy[:, : hi + 1]  # sum of squares of the window at each lag
    diff = np.maximum(shifted[:, :1] + shifted - 2 * cross, 0.0)  # d(lag), lag 0..hi
    lags = np.arange(1, hi + 1)
    normalised = diff[:, 1:] * lags / np.maximum(np.cumsum(diff[:, 1:], axis=1), 1e-12)  # d'(lag), lag 1..hi
    periods = np.empty(count, int)
    for i, row in enumerate(normalised[:, lo - 1 :]):
        below = np.flatnonzero(row < YIN_THRESHOLD)
        if below.size == 0:
            periods[i] = int(np.argmin(row))
            continue
        k = int(below[0])
        while k + 1 < row.size and row[k + 1] < row[k]:  # down to the bottom of the dip
            k += 1
        periods[i] = k
    aperiodicity = normalised[np.arange(count), lo - 1 + periods]
    level = 10 * np.log10(shifted[:, 0] / window + 1e-12)
    voiced = (aperiodicity < VOICED_BELOW) & (level > max(level.max() + SILENCE_DB, SILENCE_DBFS))
    return np.where(voiced, rate / (lo + periods), 0.0), voiced


def gross_error_rate(f0: np.ndarray, reference_f0: np.ndarray) -> float:
    """The fraction of frames whose F0 is off the reference's by more than GPE_TOLERANCE; NaN for no frames."""
    return float(np.mean(np.abs(f0 / reference_f0 - 1.0) > GPE_TOLERANCE)) if len(f0) else math.nan


def pitch_errors(reference: Pitch, output: Pitch) -> tuple[float, float]:
    """(gross pitch error, voicing decision error) of output's yin() track against the reference's (see
    DEFINITIONS); GPE NaN where no frame is voiced in both."""
    count = min(len(reference[0]), len(output[0]))
    (f_ref, v_ref), (f_out, v_out) = ((f[:count], v[:count]) for f, v in (reference, output))
    both = v_ref & v_out
    return gross_error_rate(f_out[both], f_ref[both]), float(np.mean(v_ref != v_out)) if count else math.nan


def frame_f0(frames: np.ndarray, spec: MelSpec) -> np.ndarray:
    """F0 in Hz per log-mel frame from the frames alone: the peak, at lags in F0_RANGE, of the autocorrelation of the
    power spectrum through the filterbank's pseudo-inverse (no voicing decision)."""
    lo, hi = lag_range(spec.sample_rate)
    autocorrelation = np.fft.irfft(mel_to_magnitudes(frames, spec) ** 2, n=spec.n_fft, axis=1)[:, lo : hi + 1]
    return spec.sample_rate / (lo + np.argmax(autocorrelation, axis=1))


def frames_gpe(reference: Pitch, frames: np.ndarray, spec: MelSpec) -> float:
    """Gross pitch error of frame_f0 against the original's yin() track, over its voiced frames: how much of the
    pitch the frames carry. NaN where no frame is voiced."""
    f_ref, voiced = reference
    centres = np.arange(len(f_ref)) * round(F0_STEP * spec.sample_rate) + round(F0_WINDOW * spec.sample_rate) // 2
    f_frames = frame_f0(frames, spec)[np.minimum(centres // spec.hop, len(frames) - 1)]
    return gross_error_rate(f_frames[voiced], f_ref[voiced])


def pesq_wb(reference: np.ndarray, output: np.ndarray, rate: int) -> float:
    """Wide-band PESQ of output against reference; NaN where PESQ finds no speech in the reference (or fails)."""
    from pesq import PesqError, pesq  # imported here: the dev extra installs it

    if rate != PESQ_RATE:
        reference = soxr.resample(np.asarray(reference, np.float64), rate, PESQ_RATE)
        output = soxr.resample(np.asarray(output, np.float64), rate, PESQ_RATE)
    try:
        return float(pesq(PESQ_RATE, np.asarray(reference, np.float32), np.asarray(output, np.float32), "wb"))
    except PesqError:
        return math.nan


def scores(original: np.ndarray, output: np.ndarray, reference_frames: np.ndarray, reference_pitch: Pitch,
           spec: MelSpec, pesq: bool = True) -> dict[str, float]:
    """The METRICS of one output waveform against the original (reference_frames: log_mel of the original,
    reference_pitch: its yin())."""
    frames = log_mel(output, spec)
    gpe, vde = pitch_errors(reference_pitch, yin(output, spec.sample_rate))
    return {
        "pesq_wb": pesq_wb(original, output, spec.sample_rate) if pesq else math.nan,
        "mcd_db": mcd_db(reference_frames, frames),
        "log_mel_distance": log_mel_distance(reference_frames, frames),
        "gpe": gpe,
        "vde": vde,
    }


# --- data and generation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    index: int  # position in the split's clips.json (the seed offset: a clip's audio does not depend on --clips)
    key: str
    speaker: int
    audio: np.ndarray  # float32 original in [-1, 1], cropped to `n_frames` whole hops
    frames: np.ndarray  # (all of the clip's frames, n_mels): the model reads past the crop for its lookahead
    n_frames: int  # frames compared


def load_split(data: Path, split: str, clips: int | None, max_seconds: float | None) -> tuple[MelSpec, list[Clip], int]:
    """(mel spec, the chosen clips, clips in the split): `clips` evenly spaced over the split (all when None)."""
    meta = json.loads((data / "meta.json").read_text())
    spec = MelSpec(**meta["mel"])
    folder = data / split
    index = json.loads((folder / "clips.json").read_text())
    audio = np.load(folder / "audio.npy", mmap_mode="r")
    frames = np.load(folder / "frames.npy", mmap_mode="r")
    chosen = range(len(index)) if clips is None or clips >= len(index) else \
        sorted(set(np.linspace(0, len(index) - 1, max(clips, 0)).round().astype(int).tolist()))
    limit = None if max_seconds is None else max(1, int(max_seconds * spec.sample_rate) // spec.hop)
    out = []
    for i in chosen:
        c = index[i]
        n = c["n_frames"] if limit is None else min(c["n_frames"], limit)
        pcm = np.asarray(audio[c["sample_offset"] : c["sample_offset"] + n * spec.hop])
        out.append(Clip(index=i, key=c["key"], speaker=int(c["speaker"]),
                        audio=(pcm.astype(np.float32) / 32768.0),
                        frames=np.asarray(frames[c["frame_offset"] : c["frame_offset"] + c["n_frames"]], np.float32),
                        n_frames=n))
    return spec, out, len(index)


def model_preemphasis(path: Path) -> float:
    """The pre-emphasis of the model in a checkpoint, read without building the model."""
    return config_from_dict(read_checkpoint(path)["config"]).preemphasis


def pick_generator(model: WaveNet, precision: str, threads: int | None, reference: bool) -> tuple[Generator, str]:
    """The compiled generator (models/generate/compiled.py) where it is built, else the reference one; and which it
    is."""
    if not reference:
        try:
            from models.generate.compiled import fast_available, make_generator
        except ImportError:  # models/generate/compiled.py absent
            pass
        else:
            if fast_available():
                gen = make_generator(model, precision=precision, threads=threads)  # type: ignore[arg-type]
                return gen, f"compiled ({precision})"
    return Generator(model), "reference (PyTorch eager)"


def tracked_pitch(clip: Clip, spec: MelSpec) -> np.ndarray:
    """(all the clip's frames, 2) F0 and periodicity of the compared part, as Praat's tracker reads the original
    (models.pitch.track, as in training), NaN past it: what a caller that has the pitch would send."""
    rows = np.full((len(clip.frames), 2), np.nan, np.float32)
    rows[: clip.n_frames] = pitch.track(clip.audio, spec.sample_rate, spec.hop, clip.n_frames)
    return rows


def vocode(gen: Generator, clips: list[Clip], hop: int, streams: int, temperature: float, seed: int,
           progress: Callable[[int], object] = lambda n: None,
           given_pitch: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Each clip's float32 audio generated from its frames (and the pitch given for it, if any); up to `streams`
    clips open at once as one batch."""
    speakers = gen.cfg.speakers
    pending = list(clips)
    open_: dict[int, tuple[Clip, list[np.ndarray]]] = {}
    out: dict[int, np.ndarray] = {}
    while pending or open_:
        while pending and len(open_) < streams:
            clip = pending.pop(0)
            if speakers and not 0 <= clip.speaker < speakers:
                raise ValueError(f"clip {clip.key}: speaker {clip.speaker} but the model has {speakers} speakers")
            sid = gen.open(StreamConfig(speaker=clip.speaker if speakers else 0, features=True,
                                        seed=seed + clip.index, temperature=temperature,
                                        length=clip.n_frames * hop))
            gen.push_frames(sid, clip.frames, None if given_pitch is None else given_pitch[clip.index])
            gen.end_frames(sid)
            open_[sid] = (clip, [])
        made = gen.generate(CHUNK, list(open_))
        for sid, classes in made.items():
            open_[sid][1].append(classes)
            progress(len(classes))
        for sid in [s for s in open_ if gen.done(s)]:
            clip, parts = open_.pop(sid)
            gen.close(sid)
            out[clip.index] = emphasis.Decoder(gen.cfg.preemphasis, gen.cfg.classes)(np.concatenate(parts))
        if not made and open_:
            raise RuntimeError("generation stalled")  # cannot happen: every open stream has all its frames
    return out


# --- main -------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data/fillets"), help="prepared data (wavenet-prepare --out)")
    p.add_argument("--split", default="test")
    p.add_argument("--model", type=Path, default=Path("models/default.pt"))
    p.add_argument("--clips", type=int, default=None, help="clips, evenly spaced over the split (default: all)")
    p.add_argument("--max-seconds", type=float, default=None, help="compare at most this much of each clip")
    p.add_argument("--streams", type=int, default=32, help="clips generated at once as one batch")
    p.add_argument("--temperature", type=float, default=None, help="default: the model's own (as it is served)")
    p.add_argument("--seed", type=int, default=0, help="clip i of the split is generated with seed SEED + i")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="compiled generator's weights")
    p.add_argument("--given-pitch", action="store_true",
                   help="send each clip's F0 and periodicity as Praat tracks them (a model with pitch input only), "
                        "as a caller that has the pitch would, instead of the model predicting it from the frames")
    p.add_argument("--reference-generator", action="store_true", help="use the PyTorch eager generator")
    p.add_argument("--threads", type=int, default=None, help="generator threads (default: the CPUs usable)")
    p.add_argument("--gl-iterations", type=int, default=GL_ITERATIONS)
    p.add_argument("--gl-momentum", type=float, default=GL_MOMENTUM, help="0: classic Griffin-Lim")
    p.add_argument("--references-only", action="store_true", help="skip the model: μ-law copy and Griffin-Lim only")
    p.add_argument("--per-clip", action="store_true", help="print every clip's scores before the table")
    p.add_argument("--write-examples", type=Path, metavar="DIR",
                   help="write original, vocoded and Griffin-Lim FLACs of the first --examples clips to DIR")
    p.add_argument("--examples", type=int, default=3)
    args = p.parse_args(argv)
    if args.streams < 1 or (args.clips is not None and args.clips < 1) or args.gl_iterations < 0:
        p.error("--streams and --clips must be >= 1, --gl-iterations >= 0")
    if args.max_seconds is not None and args.max_seconds <= 0:
        p.error("--max-seconds must be > 0")
    return args


def _mean(values: list[float]) -> float | None:
    kept = [v for v in values if not math.isnan(v)]
    return round(float(np.mean(kept)), 4) if kept else None


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    spec, clips, total = load_split(args.data, args.split, args.clips, args.max_seconds)
    if not clips:
        raise SystemExit(f"no clips in {args.data / args.split}")
    seconds = sum(c.n_frames * spec.hop for c in clips) / spec.sample_rate
    methods = [m for m in METHODS if m != "emphasis_copy" and not (args.references_only and m == "model")]

    outputs: dict[str, dict[int, np.ndarray]] = {}
    generator_name, trained, gen_wall = "", None, 0.0
    preemphasis = model_preemphasis(args.model) if args.model.is_file() else 0.0  # for the copy, even without the model
    if "model" in methods:
        model = load_checkpoint(args.model)
        if model.cfg.mel is None:
            raise SystemExit(f"{args.model} takes no mel frames: it is not a vocoder")
        if model.cfg.mel != spec:
            raise SystemExit(f"{args.model} was trained on other frames ({model.cfg.mel}) than {args.data} ({spec})")
        if args.given_pitch and not pitch_inputs(model.cfg):
            raise SystemExit(f"--given-pitch: {args.model} takes no pitch input")
        payload = read_checkpoint(args.model)
        trained = payload.get("trained")
        if args.temperature is None:
            args.temperature = checkpoint_temperature(payload)
        gen, generator_name = pick_generator(model, args.precision, args.threads, args.reference_generator)
        gen_start = time.perf_counter()
        with tqdm(total=sum(c.n_frames * spec.hop for c in clips), unit="sample", unit_scale=True,
                  desc="vocoding", disable=None, file=sys.stderr) as bar:
            given = {c.index: tracked_pitch(c, spec) for c in clips} if args.given_pitch else None
            outputs["model"] = vocode(gen, clips, spec.hop, args.streams, args.temperature, args.seed, bar.update,
                                      given)
        gen_wall = time.perf_counter() - gen_start
    outputs["mulaw_copy"] = {c.index: mulaw.decode(mulaw.encode(c.audio)) for c in clips}
    if preemphasis:
        methods.insert(methods.index("mulaw_copy") + 1, "emphasis_copy")
        outputs["emphasis_copy"] = {c.index: emphasis.Decoder(preemphasis)(emphasis.encode(c.audio, preemphasis))
                                    for c in clips}
    gl_start = time.perf_counter()
    outputs["griffin_lim"] = {c.index: griffin_lim(c.frames[: c.n_frames], spec, args.gl_iterations,
                                                         args.gl_momentum, seed=args.seed)
                              for c in clips}
    gl_wall = time.perf_counter() - gl_start

    per_clip: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    pitch_in_frames = []
    for clip in clips:
        reference_frames, reference_pitch = log_mel(clip.audio, spec), yin(clip.audio, spec.sample_rate)
        pitch_in_frames.append(frames_gpe(reference_pitch, clip.frames[: clip.n_frames], spec))
        for m in methods:
            per_clip[m].append(scores(clip.audio, outputs[m][clip.index], reference_frames, reference_pitch, spec))
        if args.per_clip:
            cells = "  ".join(f"{m} " + " ".join(_fmt(v, 3) if not math.isnan(v) else "n/a"
                                                  for v in per_clip[m][-1].values()) for m in methods)
            print(f"{clip.key:<32} {clip.n_frames * spec.hop / spec.sample_rate:5.2f}s  {cells}")

    if args.write_examples:
        args.write_examples.mkdir(parents=True, exist_ok=True)
        for clip in clips[: args.examples]:
            stem = args.write_examples / f"{clip.index:03d}-{clip.key.replace('/', '-')}"
            named = {"original": clip.audio, "griffin-lim": outputs["griffin_lim"][clip.index]}
            if "model" in outputs:
                named["vocoded"] = outputs["model"][clip.index]
            for name, audio in named.items():
                sf.write(f"{stem}-{name}.flac", audio, spec.sample_rate, subtype="PCM_16")

    result: dict[str, object] = {"clips": len(clips), "seconds": round(seconds, 2)}
    for m in methods:
        result[m] = {k: _mean([s[k] for s in per_clip[m]]) for k in METRICS}
        unscored = sum(math.isnan(s["pesq_wb"]) for s in per_clip[m])
        if unscored:
            result[m]["pesq_unscored_clips"] = unscored  # type: ignore[index]
    frames_pitch = _mean(pitch_in_frames)
    wall = time.perf_counter() - started
    result.update({
        "split": args.split, "clips_in_split": total,
        "model_path": str(args.model) if "model" in methods else None,
        "model_trained_step": trained.get("step") if isinstance(trained, dict) else None,
        "generator": generator_name or None, "preemphasis": preemphasis,
        "temperature": args.temperature, "seed": args.seed, "given_pitch": args.given_pitch,
        "griffin_lim_iterations": args.gl_iterations, "griffin_lim_momentum": args.gl_momentum,
        "wall_s": round(wall, 1), "generation_s": round(gen_wall, 1), "griffin_lim_s": round(gl_wall, 1),
        "frames_pitch_gpe": frames_pitch,
        "definitions": DEFINITIONS,
        "command": shlex.join(["python", "bench/quality.py", *argv]),
    })

    chosen = "all" if len(clips) == total else "evenly spaced over the"
    print(f"{len(clips)} clips ({chosen} {total} {args.split} clips), {seconds:.1f} s of audio at "
          f"{spec.sample_rate} Hz, {spec.n_mels}-band log-mel, hop {spec.hop}")
    if "model" in methods:
        step = result["model_trained_step"]
        trained_at = "" if step is None else f" (training step {step})"
        print(f"model: {args.model}{trained_at}, {generator_name} generator, temperature {args.temperature}, "
              f"seed {args.seed}; generation {gen_wall:.1f} s")
    print(f"Griffin-Lim: {args.gl_iterations} iterations, momentum {args.gl_momentum}, {gl_wall:.1f} s; "
          f"total {wall:.1f} s")
    gl_label = f"Griffin-Lim ({args.gl_iterations} it.)"
    labels = {m: gl_label if m == "griffin_lim" else METHODS[m] for m in methods}
    if "emphasis_copy" in methods:
        labels["emphasis_copy"] = f"{METHODS['emphasis_copy']} {preemphasis:g}"
    width = max(len(v) for v in labels.values())
    print(f"{'':<{width}}  {'PESQ-wb':>8}  {'MCD (dB)':>9}  {'log-mel dist':>12}  {'GPE':>6}  {'VDE':>6}")
    for m in methods:
        r = result[m]
        assert isinstance(r, dict)
        print(f"{labels[m]:<{width}}  {_fmt(r['pesq_wb'], 2):>8}  {_fmt(r['mcd_db'], 2):>9}  "
              f"{_fmt(r['log_mel_distance'], 3):>12}  {_fmt(r['gpe'], 3):>6}  {_fmt(r['vde'], 3):>6}")
    print(f"pitch read from the frames alone: GPE {_fmt(frames_pitch, 3)} (frames_pitch_gpe)")
    for k, text in DEFINITIONS.items():
        print(f"{k}: {text}")
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
