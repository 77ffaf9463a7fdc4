"""`--max-streams auto`: how many streams of a model this machine keeps in real time, measured at start-up.

The engine runs free-running streams in batches, as the scheduler does, for CALIBRATION_SECONDS per batch size;
a size counts as kept when every stream of it is made HEADROOM times faster than real time. The headroom pays for
what the measurement leaves out and shares the same cores: mel conditioning (about a tenth more work,
docs/benchmarks.md), the event loop, gRPC and the output filter, and the machine's other load.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from models.generate.reference import Generator, StreamConfig

HEADROOM = 1.25
CALIBRATION_SECONDS = 0.15  # per batch size measured
MOST_STREAMS = 64  # the most a calibration admits
STEPS_PER_CALL = 256


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
    """Total samples per second of `streams` free-running streams stepped together by gen.generate(), after one
    warm-up call; the streams are closed again."""
    sids = [gen.open(StreamConfig(seed=i)) for i in range(streams)]
    try:
        gen.generate(STEPS_PER_CALL, sids)
        made, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            made += sum(len(v) for v in gen.generate(STEPS_PER_CALL, sids).values())
        return made / elapsed
    finally:
        for sid in sids:
            gen.close(sid)


def calibrate(gen: Generator) -> tuple[int, dict[int, float]]:
    """(streams kept in real time, total samples/s measured at each batch size) for this generator's model."""
    return streams_kept(lambda n: batch_rate(gen, n), gen.cfg.sample_rate)
