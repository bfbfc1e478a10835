"""One timing procedure for every callable of a kernel case: the launcher as the dispatch
calls it (the verdict), its forced-split variants and the torch baselines.

The thirteenth session's H200 run (BENCHMARKS.md, GPU > First run of scripts/gpu_check.sh)
timed each callable alone with do_bench, right after that callable's first call; a first
call compiles (seconds with the GPU idle). Every attention figure taken right after a
compile came out slow and every one taken after other GPU work fast: tiny decode's verdict
(S=1, compiled just before) 63.8 us against 30.8 us for the same kernel forced to S=1 after
the torch baselines; 8B denoise's verdict (S=2) 151.4 us against 74.5 us forced; each split
S > 1 compiled inside its own do_bench, 100-160 us. That reading fits the run's rows but was
not measured. Here it cannot arise: every callable is called once (compiled) before any is
timed, all are warmed up together for the same wall time, and each timed round samples
every callable once in a rotated order, so they are compared under the same clocks. The
figure is the median over rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

Sample = Callable[[Callable[[], object]], float]  # microseconds per call of fn, one figure
K = TypeVar("K")


@dataclass(frozen=True)
class Rounds:
    warmup_s: float  # every callable in turn, whole rounds, until this much wall time passed
    rounds: int  # timed rounds: each samples every callable once

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.rounds < 1:
            raise ValueError(f"Rounds: warmup_s {self.warmup_s} >= 0, rounds {self.rounds} >= 1")


def time_side_by_side(fns: dict[K, Callable[[], object]], sample: Sample, rounds: Rounds,
                      sync: Callable[[], None],
                      clock: Callable[[], float] = time.monotonic) -> dict[K, float]:
    """Median microseconds per callable. Each must have been called once already, so that no
    compile falls inside the warm-up of another or a timed round. sync drains the device
    after each warm-up round: launches are asynchronous, and a loop on the host's clock alone
    would queue far more device work than its wall time (up to the launch queue's depth)."""
    names = list(fns)
    if not names:
        return {}
    end = clock() + rounds.warmup_s
    while clock() < end:
        for name in names:
            fns[name]()
        sync()
    samples: dict[K, list[float]] = {name: [] for name in names}
    for r in range(rounds.rounds):
        # Rotated: no callable is always the first after another one's work.
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(sample(fns[name]))
    return {name: statistics.median(v) for name, v in samples.items()}


def launch_us(fn: Callable[[], object], sync: Callable[[], None], calls: int = 20) -> float:
    """Host microseconds per call, with the device drained before and after: on a GPU, what a
    call costs the launching thread (when it nears the device time, the device figure may
    hold host gaps and an eager forward is bound by it); on the CPU, the wall time."""
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    sync()
    return 1e6 * elapsed / calls
