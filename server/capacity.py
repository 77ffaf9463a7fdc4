"""`--max-streams auto`: how many streams of a model this machine keeps in real time, measured at start-up.

The engine runs streams in batches, as the scheduler does, for CALIBRATION_SECONDS per batch size: vocoder streams
fed test frames where the model takes frames (its conditioning and any pitch input cost as served), else
free-running ones. A size counts as kept when every stream of it is made HEADROOM times faster than real time; the
headroom pays for what the measurement leaves out and shares the same cores: the event loop, gRPC, the output
filter, and the machine's other load.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from models.generate.reference import Generator, StreamConfig

HEADROOM = 1.25
CALIBRATION_SECONDS = 0.15  # per batch size measured
MOST_STREAMS = 64  # the most a calibration admits
STEPS_PER_CALL = 256
FEED_SECONDS = 4.0  # of frames per vocoder stream: more than CALIBRATION_SECONDS lets any engine make


def streams_kept(rate_of: Callable[[int], float], sample_rate: int, headroom: float = HEADROOM,
                 most: int = MOST_STREAMS) -> tuple[int, dict[int, float]]:
    """The most streams n in [1, most] whose total rate rate_of(n) (samples/s) keeps each at `headroom` times real
    time, found by doubling, then bisection (a stream's share only falls as n grows); and every rate measured.
    1 where not even one stream is kept: a server that admitted none would serve nobody."""
    measured: dict[int, float] = {}

    def kept(n: int) -> bool:
        measured[n] = rate_of(n)
        return measured[n] / n >= headroom * sample_rate

    if not kept(1):
        return 1, measured
    low, high = 1, 2  # kept(low); high not yet known
    while high <= most and kept(high):
        low, high = high, 2 * high
    high = min(high, most + 1)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if kept(middle) else (low, middle)
    return low, measured


def batch_rate(gen: Generator, streams: int, seconds: float = CALIBRATION_SECONDS) -> float:
    """Total samples per second of `streams` streams stepped together by gen.generate(), after one warm-up call:
    fed frames (FEED_SECONDS of a smooth random walk each) where the model takes them; closed again after."""
    mel = gen.cfg.mel
    sids = [gen.open(StreamConfig(seed=i, features=mel is not None)) for i in range(streams)]
    try:
        if mel is not None:
            rng = np.random.default_rng(0)
            n_frames = round(FEED_SECONDS * mel.sample_rate / mel.hop)
            for sid in sids:
                gen.push_frames(sid, np.cumsum(rng.normal(scale=0.3, size=(n_frames, mel.n_mels)), axis=0) - 5.0)
        gen.generate(STEPS_PER_CALL, sids)
        made, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step = sum(len(v) for v in gen.generate(STEPS_PER_CALL, sids).values())
            made += step
            if step < STEPS_PER_CALL * streams:  # the frames ran out (a very fast engine): rate so far
                break
        return made / (time.perf_counter() - start)
    finally:
        for sid in sids:
            gen.close(sid)


def calibrate(gen: Generator) -> tuple[int, dict[int, float]]:
    """(streams kept in real time, total samples/s measured at each batch size) for this generator's model."""
    return streams_kept(lambda n: batch_rate(gen, n), gen.cfg.sample_rate)
