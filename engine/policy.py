"""The scheduler's decisions behind one small interface: order, mode, victim, admission,
deferral.

FirstComePolicy is the default: arrival order, each request's own mode (auto -> the
engine's default), and the newest request is preempted first. The SLO-aware policy
(policies/ + engine/slo_policy.py) implements the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

from engine.params import Mode
from engine.request import Request

if TYPE_CHECKING:
    from engine.plan import StepOutput, StepPlan
    from engine.scheduler import Scheduler, StepEvents

DEFAULT_BLOCKS: Mapping[Mode, int] = {
    Mode.AR: 1, Mode.DIFFUSION: 8, Mode.SPEC_LINEAR: 8, Mode.SPEC_QUADRATIC: 4,
    Mode.SPEC_PIPELINED: 4,
}


class AdmissionError(Exception):
    """A request refused at admission, with the reason and an HTTP-like status."""

    def __init__(self, reason: str, status: int = 429) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


class SchedulingPolicy(ABC):
    @abstractmethod
    def order(self, requests: list[Request]) -> list[Request]:
        """Most urgent first."""

    @abstractmethod
    def choose_mode(self, req: Request, sched: Scheduler) -> tuple[Mode, int]:
        """Mode and block length for req's next iteration."""

    @abstractmethod
    def victim(self, candidates: list[Request], sched: Scheduler) -> Request | None:
        """Which running request to preempt when the cache runs dry (None: nobody)."""

    def defer(self, req: Request, sched: Scheduler) -> bool:
        """True: running req (past its prefill) sits out this step, so that the step is
        shorter for requests at risk of missing their SLO. Nobody starves on it: the
        scheduler runs deferred requests when nothing else would run."""
        return False

    def admit(self, req: Request, sched: Scheduler) -> None:  # noqa: B027 - optional
        """Raise AdmissionError to refuse req."""

    def observe(  # noqa: B027 - optional hook
            self, plan: StepPlan, out: StepOutput, events: StepEvents, sched: Scheduler
    ) -> None:
        """Learn from a finished step (timings, acceptance)."""


class FirstComePolicy(SchedulingPolicy):
    def __init__(self, auto_mode: Mode = Mode.SPEC_QUADRATIC,
                 blocks: Mapping[Mode, int] = DEFAULT_BLOCKS) -> None:
        if auto_mode is Mode.AUTO:
            raise ValueError("auto_mode must be a concrete mode")
        self.auto_mode, self.blocks = auto_mode, dict(blocks)

    def order(self, requests: list[Request]) -> list[Request]:
        return sorted(requests, key=lambda r: r.arrival_time)

    def choose_mode(self, req: Request, sched: Scheduler) -> tuple[Mode, int]:
        mode = req.decode.mode
        if mode is Mode.AUTO:
            mode = self.auto_mode
        return mode, req.decode.block_length or self.blocks[mode]

    def victim(self, candidates: list[Request], sched: Scheduler) -> Request | None:
        return max(candidates, key=lambda r: r.arrival_time, default=None)
