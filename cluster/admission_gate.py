"""The engine core's admission gate: newcomers that reach a busy engine one by one are held
for a few steps, so that they join the running batch together.

Why: through a server, clients' requests reach the engine staggered (each one a round trip
after its predecessor ended), so nearly every step of a full batch carries one prompt's
prefill beside the decodes. On the CPU engine a step with one prefill costs much more than
its share of a step with many (tandem-tiny, 64 decodes: 49 ms alone, 60 ms with one 48-token
prefill, 63 ms with four; BENCHMARKS.md > Serving, fourth session), while an engine driven
directly admits every free slot at once and prefills them in one or two steps. Holding
newcomers until the batch is back at its recent level (or for at most `max_hold_steps`
steps) brings the server's batches back towards those waves. Off by default
(`model.admit_hold_steps` 0): on this 2-core box three quiet runs could not tell it from the
noise (the same BENCHMARKS.md section).

What is never held: a job that reaches an idle engine (so C = 1 keeps its time to first
token), a job with an SLO (the scheduler decides those at once), and any job once the running
requests plus the held ones reach the highest level of the last `window_s` seconds (load
rising, or the wave complete).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cluster.job import GenerateJob


@dataclass(frozen=True)
class GateConfig:
    max_hold_steps: int = 0  # 0: off, every job is admitted before the next step
    window_s: float = 1.0  # how far back the batch's recent level reaches

    def __post_init__(self) -> None:
        if self.max_hold_steps < 0:
            raise ValueError(f"max_hold_steps must be >= 0, got {self.max_hold_steps}")
        if self.window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")


class AdmissionGate:
    def __init__(self, config: GateConfig, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.config, self.clock = config, clock
        self._held: list[tuple[GenerateJob, int]] = []  # (job, engine step when it came)
        self._levels: deque[tuple[float, int]] = deque()  # (time, running + held), recent

    @property
    def num_held(self) -> int:
        return len(self._held)

    def offer(self, job: GenerateJob, num_running: int, step: int) -> list[GenerateJob]:
        """A new job: the jobs to admit now (it, with every held one, or none)."""
        self._held.append((job, step))
        if not self.config.max_hold_steps or num_running == 0 or not may_hold(job):
            return self.release()
        return self.due(num_running, step)

    def due(self, num_running: int, step: int) -> list[GenerateJob]:
        """Before a step: every held job if the batch is back at its recent level, the
        engine is idle or the oldest has waited max_hold_steps steps; else none."""
        level = num_running + sum(len(job.choices) for job, _ in self._held)
        now = self.clock()
        self._levels.append((now, level))
        while self._levels[0][0] < now - self.config.window_s:
            self._levels.popleft()
        if not self._held:
            return []
        recent = max(lv for _, lv in self._levels)
        oldest = self._held[0][1]
        if num_running == 0 or level >= recent or step - oldest >= self.config.max_hold_steps:
            return self.release()
        return []

    def holds_any(self, request_ids: list[str]) -> bool:
        """Whether a held job has one of these request ids (an abort for it arrived)."""
        ids = set(request_ids)
        return any(job.request_id(c) in ids for job, _ in self._held for c in job.choices)

    def release(self) -> list[GenerateJob]:
        jobs = [job for job, _ in self._held]
        self._held.clear()
        return jobs


def may_hold(job: GenerateJob) -> bool:
    return job.slo is None or job.slo.is_empty
