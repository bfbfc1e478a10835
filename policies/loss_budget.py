"""What pass 2a's speculation may cost the requests that pay for it.

Requests whose TPOT bound only speculation meets (the selector's pass 2a,
policies/tight_search.py) lengthen every other request's step. Pass 2a may lower the
batch's tokens per second by the share the payers (the other requests in the batch)
afford, on average over them:
- a request with only a deadline, on its pace with a margin: what keeps it so,
  1 - step / (`margin` x its seconds per token needed x its tokens per forward). Batch
  requests with deadline slack pay this way in mixed workloads. (The search itself still
  counts each of them as a request to be met: this is the budget, not their guard.)
- every other request (a TPOT bound, no bound, or a deadline already past its margin):
  `tight_loss`. In all-tight workloads the payers are the other tight requests, who crowd
  each other out when the search buys speed for some of them at everyone's cost.
Where every payer has `rescue_slack_steps` steps of slack there is no floor (share 1).

One share for everyone either starved the tight requests beside batch requests with slack
(tandem-tiny mixed_tight with 0.03) or, raised, let tight requests crowd each other out
(NLD-8B tight overload with 0.3: 65.0 -> 55.5 goodput); BENCHMARKS.md, "fifth session".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from policies.slo import SLO


@dataclass(slots=True)  # not frozen: built for every request in every pass 2a (~50 a select)
class Payer:
    slo: SLO
    need: float  # seconds per token its SLO needs, with the safety margin (inf none, nan lost)
    rate: float  # tokens per forward at the option it runs while pass 2a decides
    slack: float  # seconds it could wait now and still finish in time at its pace

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"Payer.rate must be > 0, got {self.rate}")

    def affords(self, base_step: float, margin: float, tight_loss: float) -> float:
        """The share of its tokens per second it may lose, from a step of base_step."""
        if self.slo.tpot_ms is None and self.slo.deadline_ms is not None and (
                math.isfinite(self.need)):
            return max(tight_loss, 1 - base_step / (margin * self.need * self.rate))
        return tight_loss


def loss_budget(payers: Iterable[Payer], base_step: float, margin: float, tight_loss: float,
                spare_s: float) -> float:
    """The share of the batch's tokens per second pass 2a may give up (1: no floor).
    base_step: the step with the speculation-only requests at AR; spare_s: the slack that
    frees every payer of the floor."""
    if not 0 < margin <= 1 or not 0 <= tight_loss <= 1:
        raise ValueError(f"margin {margin} must be in (0, 1], tight_loss {tight_loss} in [0, 1]")
    total, count, all_wait = 0.0, 0, True
    for p in payers:
        count += 1
        all_wait = all_wait and p.slack >= spare_s
        total += p.affords(base_step, margin, tight_loss)
    return 1.0 if all_wait else total / count
