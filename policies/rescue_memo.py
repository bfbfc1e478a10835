"""What a request's failed rescue depended on, so that it is tried again only when that moved.

A request the selector leaves unmet although some option meets it alone ("unmet but not
lost": the batch's step is too long for it, and every option that would meet it breaks a
request it must not break or costs the batch throughput) was re-chosen every step: at 64
requests half of them interactive (bench/slo_selector_cost.py, `mixed`), ~26 rescues a step
that failed again, 85 % of the selector's time. Whether a rescue succeeds depends on the
request's need (seconds per token it may take), its tokens per forward under each option,
the batch's step and tokens per second (the throughput floor), and the tightest cap among
the requests it must not break (the longest step that keeps them within their limits). The
decision cache keeps the request at the option its failed rescue left it at while all of
these stay within a band of what they were (its acceptance has its own band there), and
chooses for it again as soon as one moves: this is not holding a request for a number of
steps (that lost attainment in the simulator), it is not re-asking a question whose inputs
did not change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

INF = math.inf
Guard = tuple[float, int, Any, float]  # the selector's (cap, index, slot, limit)


@dataclass(slots=True)  # built every select: a frozen init costs ~6x a plain one
class BatchAfter:
    """A select's outcome as a failed rescue saw it: the step, the batch's tokens per
    second, and the guards (the selector's, shortest cap first)."""

    step_s: float
    throughput: float
    guards: Sequence[Guard]

    def cap_without(self, request_id: str, priority: int) -> float:
        """The longest step that keeps every guarded request but this one, of at least its
        priority, within its limit."""
        for cap, _, slot, _ in self.guards:
            view = slot.view
            if view.id != request_id and view.priority >= priority:
                return cap
        return INF


@dataclass(slots=True)  # as BatchAfter
class FailedAt:
    need: float  # its needed seconds per token (with no margin) then
    step_s: float
    throughput: float
    cap: float
    at_least_work: bool  # it was left at the option of least work (AR)

    def __post_init__(self) -> None:
        if not self.need > 0 or not self.step_s > 0:
            raise ValueError(f"FailedAt: need {self.need} and step {self.step_s} must be > 0")

    @staticmethod
    def of(need: float, after: BatchAfter, request_id: str, priority: int,
           at_least_work: bool) -> FailedAt:
        return FailedAt(need, after.step_s, after.throughput,
                        after.cap_without(request_id, priority), at_least_work)

    def holds(self, need: float, after: BatchAfter, request_id: str, priority: int,
              band: float) -> bool:
        """Nothing its rescue depends on moved by more than `band` (relative) toward a
        rescue that could succeed. A rescue gets easier as the request's need grows, the
        step shrinks and the others' caps grow; left at the least work (AR), it is not
        tried again for the opposite moves (they can only make it fail again), but it is
        when it gets on or off track (its step within its bare need: a request on track
        does not gamble on speculation) or the batch's tokens per second moved (the
        floor a rescue keeps). Left at more work, it must not break anyone either way."""
        cap = after.cap_without(request_id, priority)
        if (after.step_s <= need) != (self.step_s <= self.need) or not _near(
                after.throughput, self.throughput, band):
            return False
        if self.at_least_work:
            return (need <= self.need * (1 + band) and after.step_s >= self.step_s * (1 - band)
                    and cap <= self.cap * (1 + band))
        return (_near(need, self.need, band) and _near(after.step_s, self.step_s, band)
                and _near(cap, self.cap, band))


def _near(now: float, then: float, band: float) -> bool:
    if then == INF or now == INF:
        return now == then
    return abs(now - then) <= band * then
