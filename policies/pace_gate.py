"""The pace gate: a deadline-only request waits to start while starting it would slow the
running batch past the pace its deadlines need.

Requests with only an end-to-end deadline (batch jobs) are never refused as overloaded:
admission checks only that each could be met alone (policies/admission.py). On a machine
whose speed drifts, that let a batch of them grow past its deadlines' pace: each newcomer
adds to every step, every running request falls behind, and a run ends with 30 decoders a
step and nearly all deadlines missed while the same arrivals in another run met every one
(#12's batch cells on the CPU engine, and the simulator with drift: BENCHMARKS.md). The
gate keeps such a request queued, not refused: it starts once the predicted step with it
(one more decoder at AR's work, and every request already running or starting ahead of it)
fits within `margin` of the pace that every running request with a finish bound still
needs, and its own. Requests that cannot be met even alone do not hold others back; nor
does a waiting request that could not be met alone any more (it starts when it fits).
The gate holds requests in the policy's order: once one waits, every deadline-only request
after it waits too, so a later one never overtakes an earlier one it was ordered behind.
Requests with a TTFT bound are never held (admission refused them if they could not fit).
The scheduler starts a held request anyway when nothing else would run.

Off by default (`enabled`): it won where step times drift over a whole run (the simulator with
`--drift`, batch high / overload: attainment +0.1-0.25; the CPU engine's batch high, auto 421
vs 347 of 450 met) but lost where they do not, and on the mixed workload either way: at
overload, goodput fell 30-40 % for every policy (held batch requests finish after the last
arrival and more of them miss), 300 requests x 3 seeds on both CPU profiles (BENCHMARKS.md >
SLO scheduling, "The pace gate, on by default for an hour"). Turn it on per deployment
where batch jobs share a machine whose speed drifts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policies.cost_model import CostModel
from policies.request_view import RequestView
from policies.slo import SAFETY


@dataclass(frozen=True)
class PaceGateConfig:
    enabled: bool = False  # see the module's docstring
    margin: float = 1.0  # of the needed pace
    safety: float = SAFETY

    def __post_init__(self) -> None:
        if not all(0.0 < x <= 1.0 for x in (self.margin, self.safety)):
            raise ValueError(f"PaceGateConfig: margin and safety in (0, 1], got "
                             f"{self.margin}, {self.safety}")


def is_deadline_only(v: RequestView) -> bool:
    slo = v.slo
    return slo.deadline_ms is not None and slo.ttft_ms is None and slo.tpot_ms is None


class PaceGate:
    def __init__(self, cost: CostModel, config: PaceGateConfig = PaceGateConfig()) -> None:
        self.cost, self.config = cost, config
        self.interference_s = 0.0  # mean time prefill chunks add to a step (set by the policy)

    def applies(self, waiting: Sequence[RequestView]) -> bool:
        """Whether the gate could hold any of these (the caller may skip preparing held()'s
        inputs, every step, where it cannot)."""
        return self.config.enabled and any(map(is_deadline_only, waiting))

    def held(self, decoders: Sequence[RequestView], work: Mapping[str, int],
             rate: Mapping[str, float], starting: Sequence[RequestView],
             waiting: Sequence[RequestView], now: float) -> frozenset[str]:
        """Ids of the waiting requests that must not start this step. decoders: the running
        requests past their prefill, with their work tokens and tokens per forward this
        step; starting: running requests still prefilling; waiting: in the policy's order."""
        if not self.applies(waiting):
            return frozenset()
        target = min((self._limit(v, work[v.id], rate[v.id], now) for v in decoders),
                     default=math.inf)
        tokens = sum(work[v.id] for v in decoders) + len(starting)
        num = len(decoders) + len(starting)
        held: set[str] = set()
        lost: list[RequestView] = []
        for v in waiting:
            if is_deadline_only(v):
                own = self._limit(v, 1, 1.0, now)
                if own == math.inf:
                    lost.append(v)  # after every request that can still be met
                    continue
                if held or not self._fits(tokens, num, min(target, own)):
                    held.add(v.id)
                    continue
                target = min(target, own)
            tokens, num = tokens + 1, num + 1
        for v in lost:
            if held or not self._fits(tokens, num, target):
                held.add(v.id)
                continue
            tokens, num = tokens + 1, num + 1
        return frozenset(held)

    def _fits(self, tokens: int, num: int, limit: float) -> bool:
        """Whether one more decoder at AR's work keeps the step within margin x limit."""
        step = self.cost.predict(tokens + 1, num + 1) + self.interference_s
        return num == 0 or step <= self.config.margin * limit

    def _limit(self, v: RequestView, work: int, rate: float, now: float) -> float:
        """The longest step that keeps v on the pace its finish bound needs (inf: no bound,
        or lost even alone)."""
        due = v.finish_deadline
        remaining = v.max_tokens - v.num_output
        if due == math.inf or remaining <= 0:
            return math.inf
        step = (due - now) / remaining * self.config.safety * rate
        if step < self.cost.predict(work, 1):
            return math.inf  # lost: not even alone
        return step
