"""A request as the policy sees it: plain numbers, on one clock (seconds).

The engine's scheduler builds one per live request each step (engine/request.py) and hands
them over in a policies.decision.SchedulerView (fresh copies: a policy that changes one
changes nothing in the scheduler); everything in policies/ decides from them alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.option import Option
from policies.slo import SLO

INF = math.inf


@dataclass
class RequestView:
    id: str
    arrival_s: float
    slo: SLO
    max_tokens: int
    num_prompt: int = 1
    num_output: int = 0  # emitted so far
    num_pending: int = 0  # tokens not in the cache yet; > 1 means a (re)prefill comes first
    first_token_s: float | None = None
    option: Option | None = None  # the option it runs now (None: not decoding yet)
    fixed: Option | None = None  # the request asked for this option (None: auto)
    is_mid_iteration: bool = False  # must keep its option this step
    allow_lossy: bool = False
    priority: int = 0

    @property
    def remaining(self) -> int:
        left = self.max_tokens - self.num_output  # max(0, left): a builtin call less
        return left if left > 0 else 0

    @property
    def is_prefilling(self) -> bool:
        return self.num_pending > 1 or self.first_token_s is None

    @property
    def is_auto(self) -> bool:
        return self.fixed is None

    @property
    def has_slo(self) -> bool:
        return self.slo.has_bounds

    @property
    def ttft_deadline(self) -> float:
        """When the first token is due (inf once it came, or with no TTFT bound)."""
        if self.first_token_s is not None or self.slo.ttft_ms is None:
            return INF
        return self.arrival_s + self.slo.ttft_ms / 1e3

    @property
    def finish_deadline(self) -> float:
        """When the last token is due: the end-to-end deadline, and the TPOT bound read as
        a deadline for the last token (mean TPOT <= bound iff the last token comes by
        first_token + bound * (max_tokens - 1))."""
        slo, due = self.slo, INF
        if slo.deadline_ms is not None:
            due = self.arrival_s + slo.deadline_ms / 1e3
        if slo.tpot_ms is not None:
            first = self.first_token_s
            if first is None:
                first = self.arrival_s + (slo.ttft_ms or 0.0) / 1e3
            due = min(due, first + slo.tpot_ms / 1e3 * max(0, self.max_tokens - 1))
        return due

    @property
    def next_deadline(self) -> float:
        """What EDF orders by: the first token's deadline until it comes, then the last's."""
        return min(self.ttft_deadline, self.finish_deadline)

    def needed_time_per_token(self, now: float) -> float:
        """The slowest mean seconds per remaining token that still meets the finish
        deadline (inf without one; <= 0 once it has passed)."""
        due = self.finish_deadline
        if due == INF or self.remaining == 0:
            return INF
        return (due - now) / self.remaining

    def slack(self, now: float, time_per_token: float, time_to_first: float = 0.0) -> float:
        """Seconds to spare if it decodes at time_per_token from now (inf without an SLO)."""
        spare = self.finish_deadline - now - self.remaining * time_per_token
        if self.first_token_s is None:
            spare = min(spare, self.ttft_deadline - now - time_to_first)
        return spare
