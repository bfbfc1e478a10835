"""What pass 2a's speculation may cost the requests that pay for it.

Requests whose TPOT bound only speculation meets (the selector's pass 2a) lengthen every
other request's step. Pass 2a may lower the batch's tokens per second by the share the
payers (every other request in the batch) afford, on average:
- a request with only a deadline, on its pace: as much as keeps it on its pace with a
  margin, 1 - step / (`margin` x its seconds per token needed x its tokens per forward);
  and no choice may lengthen the step past that (`step_cap`). Batch requests with deadline
  slack pay this way in mixed workloads.
- every other request (a TPOT bound, no bound, or a deadline behind its margin):
  `tight_loss`. In all-tight workloads the payers are the other tight requests, who
  crowd each other out when the search buys speed for some of them at everyone's cost.
Where every payer has `rescue_slack_steps` steps of slack, there is no floor at all.

One fraction for everyone either starved the tight requests beside slack batch requests
(tandem-tiny mixed_tight: tight_loss 0.03) or, raised, let tight requests crowd each other
out (NLD-8B tight overload with 0.3: 65.0 -> 55.5 goodput); BENCHMARKS.md, "fifth session".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from policies.slo import SLO

INF = math.inf


@dataclass(frozen=True)
class Payer:
    slo: SLO
    need: float  # seconds per token its SLO needs, with the safety margin (inf none, nan lost)
    rate: float  # tokens per forward at the option it runs while 2a decides
    slack: float  # seconds it could wait now and still finish in time at its pace

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"Payer.rate must be > 0, got {self.rate}")


@dataclass(frozen=True)
class LossBudget:
    loss: float  # the share of the batch's tokens per second pass 2a may give up (1: no floor)
    step_cap: float  # the longest step the deadline-only payers afford (inf: no cap)

    def __post_init__(self) -> None:
        if not 0 <= self.loss <= 1 or not self.step_cap > 0:
            raise ValueError(f"a loss budget of {self.loss} with a step cap of {self.step_cap}")


def loss_budget(payers: Iterable[Payer], base_step: float, margin: float, tight_loss: float,
                spare_s: float) -> LossBudget:
    """The budget the payers grant. base_step: the step with the speculation-only requests
    at AR; spare_s: the slack that frees every payer of the floor (rescue_slack_steps
    steps)."""
    if not 0 < margin <= 1:
        raise ValueError(f"margin must be in (0, 1], got {margin}")
    if not 0 <= tight_loss <= 1:
        raise ValueError(f"tight_loss must be in [0, 1], got {tight_loss}")
    total, count, cap, all_wait = 0.0, 0, INF, True
    for p in payers:
        count += 1
        all_wait = all_wait and p.slack >= spare_s
        if p.slo.tpot_ms is None and p.slo.deadline_ms is not None and math.isfinite(p.need):
            limit = margin * p.need * p.rate
            if limit >= base_step:  # on its pace with the margin now: it pays in time
                cap = min(cap, limit)
                total += max(tight_loss, 1 - base_step / limit)
                continue
        total += tight_loss
    if all_wait:
        return LossBudget(1.0, cap)
    return LossBudget(total / count, cap)
