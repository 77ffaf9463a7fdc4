"""The compiled fast path of the queue generator: one C++ call runs a whole chunk (every layer, the head, sampling).

`make_generator()` is what other code calls: a `FastGenerator` where the extension is built, else the reference
`Generator` (with a warning, once). Both share the stream bookkeeping, the bias building, the queue bank
(`self.queues`, updated in place by either) and priming; only the chunk loop and teacher-forced steps differ.

The extension comes in three variants of one source (csrc/, see setup.py): `_engine_avx512` (AVX-512 kernels,
built with and loaded only where the CPU has AVX512_BF16 too), else `_engine_avx2` (the same kernels in 8 lanes)
where it has AVX2 and FMA, else `_engine_generic` (plain loops, any CPU).

Precision: "fp32" matches the reference to float rounding (the tests hold it to 1e-4 on logits); "bf16" rounds the
weights (not the activations, which stay fp32, as do the accumulations) to bfloat16, which halves the bytes read per
sample so that the default model's weights (1.25 MB) fit in a core's L2 cache (2 MB on Sapphire Rapids; on a 512 KB
L2 they come from L3 at half the bytes). The default is bf16 for the SIMD variants (both widen bf16 weights by integer
shifts), fp32 for the generic one, which only emulates bf16. bench/engine.py measures both, every variant this
CPU runs, and what bf16 does to the logits.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Literal

import numpy as np
import torch

from models.cpus import default_threads
from models.generate.reference import Generator, StreamState, constant_bias
from models.wavenet import WaveNet

Precision = Literal["fp32", "bf16"]
VARIANTS = ("avx512", "avx2", "generic")  # best first
_CPU_NEEDS = {  # what each SIMD variant needs: the generic module's probe, else these /proc/cpuinfo flags
    "avx512": ("cpu_has_avx512_bf16", {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"}),
    "avx2": ("cpu_has_avx2_fma", {"avx2", "fma"}),
}
SIMD_VARIANTS = tuple(_CPU_NEEDS)  # bf16 weights natively; loaded only where the CPU has their instructions

_warned = False


def _import(variant: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"models.generate._engine_{variant}")
    except ImportError:
        return None


def _cpu_runs(variant: str) -> bool:
    """Whether this CPU (and OS) has the instructions of a SIMD variant; the generic one runs anywhere."""
    if variant not in _CPU_NEEDS:
        return True
    probe, flags_needed = _CPU_NEEDS[variant]
    ask = getattr(_import("generic"), probe, None)
    if ask is not None:
        return bool(ask())
    try:  # no generic variant (or an older build of it) to ask: the kernel's view of the CPU (Linux)
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return flags_needed <= set(flags)


def engine_module(variant: str | None = None) -> ModuleType | None:
    """The extension module of the given variant (None: the best this CPU runs), or None if it is not built.

    Asking for "avx512" or "avx2" on a CPU without it gives None rather than a module that would crash.
    """
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    candidates = [variant] if variant else list(VARIANTS)
    for name in candidates:
        if not _cpu_runs(name):
            continue
        module = _import(name)
        if module is not None:
            return module
    return None


def fast_available(variant: str | None = None) -> bool:
    return engine_module(variant) is not None


class FastGenerator(Generator):
    """The reference generator with its chunk loop and teacher-forced step run by the compiled engine."""

    def __init__(
        self,
        model: WaveNet,
        precision: Precision | None = None,
        threads: int | None = None,
        variant: str | None = None,
    ):
        """precision None: "bf16" on the SIMD variants (avx512, avx2), "fp32" on the generic one. threads: for
        batches (one stream runs on one); None: the CPUs this process may use. variant None: the best available."""
        module = engine_module(variant)
        if module is None:
            raise RuntimeError(f"the compiled generator ({variant or 'any variant'}) is not available here")
        if precision is None:
            precision = "bf16" if module.VARIANT in SIMD_VARIANTS else "fp32"
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        super().__init__(model)
        self.precision: Precision = precision
        self.threads = threads or default_threads()
        self.variant: str = module.VARIANT
        w = self._weights
        weights = [w.embed]
        for layer in range(len(self.dilations)):
            weights += [w.past[layer], w.current[layer], w.gate_bias[layer], w.out[layer], w.out_bias[layer]]
        weights += [w.head1, w.head1_bias, w.head2, w.head2_bias]
        config = {
            "residual": self.cfg.residual_channels,
            "gate": self.cfg.gate_channels,
            "skip": self.cfg.skip_channels,
            "classes": self.cfg.classes,
            "dilations": list(self.dilations),
        }
        # Pitch-lag taps run inside the engine, which keeps each stream's inputs for them, so a chunk may be any
        # length (the reference stops each chunk at lag_reach's nearest). A sine excitation comes per sample from
        # here, in the biases (_chunk_bias), and so do the taps of a model that has both.
        self._native_lag = bool(self.cfg.pitch_lag) and not self.cfg.pitch_harmonics
        if self._native_lag:
            assert self._excitation_weight is not None
            config.update(pitch_lag=self.cfg.pitch_lag, sample_rate=self.cfg.sample_rate, lag_history=self._history,
                          lag_weight=self._excitation_weight.to(torch.float32).contiguous().numpy())
        with torch.inference_mode():
            arrays = [t.detach().to(torch.float32).contiguous().numpy() for t in weights]
        self._engine = module.Engine(config, arrays, precision)
        self.record_logits: list[np.ndarray] | None = None  # a list: each chunk's (B, steps, classes) logits go there

    def info(self) -> dict[str, object]:
        """The engine's variant, precision and packed weight bytes."""
        return dict(self._engine.info())

    def _chunk_cap(self) -> int | None:
        return None if self._native_lag else super()._chunk_cap()

    def _chunk_bias(self, states: list[StreamState], counts: list[int], steps: int) -> torch.Tensor:
        """What is added to the per-frame biases, which the engine interpolates itself, step by step (see
        _run_chunk), with the float32 operations of Generator._sample_bias in the same order: each stream's
        constant bias, as a broadcast (B, steps, width) view, or with a sine excitation, a (B, steps, width)
        tensor of the constant plus each sample's excitation bias (pitch-lag taps alone: the engine adds them)."""
        if self._native_lag or not any(s.pitch is not None for s in states):
            return constant_bias(states, steps)
        bias = constant_bias(states, steps).clone()
        for row, (state, count) in enumerate(zip(states, counts)):
            if state.pitch is not None:
                bias[row, :count] = self._added_bias(state, state.t, count)
        return bias

    def _run_chunk(
        self,
        states: list[StreamState],
        counts: list[int],
        bias: torch.Tensor,
        seeds: np.ndarray,
        temperatures: np.ndarray,
    ) -> np.ndarray:
        frames: list[np.ndarray | None] = []
        for state in states:
            if state.config.features:
                assert state.frame_bias is not None
                frames.append(state.frame_bias.detach().to(torch.float32).contiguous().numpy())
            else:
                frames.append(None)
        offsets = np.array([s.frame_bias_offset for s in states], np.int64)
        hop = self.cfg.mel.hop if self.cfg.mel is not None else 0
        per_frame = (frames, offsets, hop) if any(f is not None for f in frames) else None
        logits = None
        if self.record_logits is not None:
            logits = np.zeros((len(states), bias.shape[1], self.cfg.classes), np.float32)
            self.record_logits.append(logits)
        lag = None
        if self._native_lag and any(s.pitch is not None for s in states):
            lag = [None if s.pitch is None else (np.ascontiguousarray(s.pitch, np.float64), s.history)
                   for s in states]
        out = self._engine_run(states, np.asarray(counts, np.int64), bias, seeds, temperatures, logits, per_frame,
                               lag)
        for row, (state, count) in enumerate(zip(states, counts)):
            if count > 0:
                state.t += count
                state.last = int(out[row, count - 1])
        return out

    def step_logits(self, sids: list[int], inputs: np.ndarray) -> np.ndarray:
        """Teacher forcing: advance the given streams one step on the given input classes; (B, classes) logits."""
        states = [self.streams[sid] for sid in sids]
        bias = torch.stack([self._sample_bias(s, s.t, 1)[0] for s in states])[:, None, :]
        saved = [s.last for s in states]
        for state, cls in zip(states, np.asarray(inputs, np.int64).reshape(-1)):
            state.last = int(cls)
        logits = np.zeros((len(states), 1, self.cfg.classes), np.float32)
        try:
            self._engine_run(
                states,
                np.ones(len(states), np.int64),
                bias,
                np.zeros(len(states), np.uint64),
                np.zeros(len(states), np.float64),
                logits,
            )
        finally:
            for state, last in zip(states, saved):
                state.last = last
        for state, cls in zip(states, np.asarray(inputs, np.int64).reshape(-1)):
            state.t += 1
            self._remember(state, np.array([cls]))
        return logits[:, 0]

    def _engine_run(
        self,
        states: list[StreamState],
        counts: np.ndarray,
        bias: torch.Tensor,
        seeds: np.ndarray,
        temperatures: np.ndarray,
        logits: np.ndarray | None,
        frames: tuple[list[np.ndarray | None], np.ndarray, int] | None = None,
        lag: list[tuple[np.ndarray, np.ndarray | None] | None] | None = None,
    ) -> np.ndarray:
        """The engine's chunk call on the shared queue bank; t and last are left for the caller to advance.

        frames: (per-frame biases or None per stream, their first frame's index, hop) for streams whose biases the
        engine interpolates; their rows of bias then hold only the per-stream constant. lag: per stream, None or
        (its pitch rows, as frames: (frames, 3) float64; its history: the inputs of its last positions before t)
        for streams whose pitch-lag taps the engine computes."""
        frame_list, offsets, hop = frames if frames is not None else (None, None, 0)
        return self._engine.run(
            [q.numpy() for q in self.queues],
            np.array([s.slot for s in states], np.int64),
            np.array([s.t for s in states], np.int64),
            np.array([s.last for s in states], np.int64),
            counts,
            _as_engine_bias(bias),
            np.ascontiguousarray(seeds, np.uint64),
            np.ascontiguousarray(temperatures, np.float64),
            self.threads,
            logits,
            frame_list,
            offsets,
            hop,
            lag,
        )


def _as_engine_bias(bias: torch.Tensor) -> np.ndarray:
    """The (B, n, width) float32 biases as an array the engine reads in place (a broadcast view stays one)."""
    if bias.dtype != torch.float32 or bias.stride(2) != 1 or min(bias.stride()) < 0:
        bias = bias.to(torch.float32).contiguous()
    return bias.detach().numpy()


def engine_description(gen: Generator) -> dict[str, object]:
    """What runs a generator, for logs: the compiled variant with its precision and threads, or the reference."""
    if isinstance(gen, FastGenerator):
        return {"engine": gen.variant, "precision": gen.precision, "threads": gen.threads}
    return {"engine": "reference"}


def make_generator(
    model: WaveNet,
    prefer_fast: bool = True,
    precision: Precision | None = None,
    threads: int | None = None,
) -> Generator:
    """The generator to use: the compiled one where it is built (else the reference, with a warning once).

    precision: "fp32" (the reference's results to float rounding), "bf16" (bf16 weights: about 3x faster for one
    stream; see bench/engine.py for its effect on logits), None: bf16 where the CPU has native bf16, else fp32.
    """
    global _warned
    if prefer_fast:
        if fast_available():
            return FastGenerator(model, precision=precision, threads=threads)
        if not _warned:
            warnings.warn(
                "the compiled generator (models.generate._engine_*) is not built; using the slower reference generator "
                "(reinstall with `make setup` or `pip install -e .` and a C++17 compiler to build it)",
                RuntimeWarning,
                stacklevel=2,
            )
            _warned = True
    return Generator(model)
