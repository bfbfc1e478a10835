"""Deferral: requests with slack sit out a step so that requests at risk can meet their SLO.

When the chosen options still leave some request short of the pace its SLO needs, the step
is too long for it; every request in the batch adds to that step (its tokens and its
per-request cost). Requests whose deadline is far (a batch job due in minutes) lose almost
nothing by skipping one step, so the ones with the most slack are deferred, one at a time,
until the predicted step is short enough for every request at risk that can still be saved,
or nobody else can afford to wait.

A request may sit out a step only with at least `min_slack_steps` steps of slack at its
current pace, and slack for at least `min_slack_share` of the time left to its deadline
(its pace may get worse as load grows: under overload, deferring down to a few steps of
slack made batch requests miss), and a priority no higher than the request it yields to;
prefilling and lost requests never wait. Slack shrinks while a request waits, so no request
waits forever: a request without bounds counts as due `horizon_s` after arrival.

Priority: a request is also at risk when its measured pace (the engine's own time per token
since its first, `measured_time_per_token`) is slower than it needs, although the predicted
step says it is on pace. The cost model predicts only the step; on a busy host the time
between steps (the server's outputs, other processes) made clients see ~3.5x the step per
token (BENCHMARKS.md, "Online traffic beside a batch job"), so online requests missed while
lower-priority batch requests were never asked to wait. Such a request makes every request
of a strictly lower priority that may wait sit the step out (equal priorities keep the
predicted rule): the predicted step cannot say how much shorter is enough, and the measured
pace is a mean since the first token, slow to recover. Measured: bench/batch_priority.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policies.acceptance import AcceptanceEstimator
from policies.cost_model import CostModel
from policies.option import AR, Option
from policies.ordering import BEST_EFFORT_HORIZON_S, effective_deadline
from policies.preemption import slack_of
from policies.request_view import RequestView
from policies.slo import SAFETY


@dataclass(frozen=True)
class DeferralConfig:
    enabled: bool = True
    min_slack_steps: float = 20.0
    min_slack_share: float = 0.5  # of the time left until its deadline
    safety: float = SAFETY
    min_measured_tokens: int = 4  # tokens out before a request's measured pace counts


class Deferral:
    def __init__(self, cost: CostModel, acceptance: AcceptanceEstimator,
                 config: DeferralConfig = DeferralConfig()) -> None:
        self.cost, self.acceptance, self.config = cost, acceptance, config
        self.interference_s = 0.0  # mean time prefill chunks add to a step (set by the policy)

    def choose(self, decoders: Sequence[RequestView], options: Mapping[str, Option],
               now: float) -> set[str]:
        """Ids of the decoders that should sit out this step."""
        if not self.config.enabled or len(decoders) < 2:
            return set()
        tpf = self.acceptance.tokens_per_forward
        rate = {v.id: 1.0 if (o := options[v.id]).mode == AR else tpf(o, v.id)
                for v in decoders}
        tokens = sum([options[v.id].work_tokens for v in decoders])
        step = self.cost.predict(tokens, len(decoders)) + self.interference_s
        target, priority = self._target(decoders, options, rate, step, now)
        if target >= step:
            return set()
        deferred: set[str] = set()
        for v in self._by_slack(decoders, rate, step, now, priority):
            tokens -= options[v.id].work_tokens
            deferred.add(v.id)
            left = len(decoders) - len(deferred)
            if self.cost.predict(tokens, left) + self.interference_s <= target:
                return deferred
        return deferred

    def _target(self, decoders: Sequence[RequestView], options: Mapping[str, Option],
                rate: Mapping[str, float], step: float, now: float) -> tuple[float, int]:
        """The longest step that meets every request at risk that could be met alone, and
        the lowest priority among them."""
        target, priority = math.inf, 1 << 30
        safety, min_tokens = self.config.safety, self.config.min_measured_tokens
        for v in decoders:  # the per-step path: RequestView's properties inlined
            slo, first = v.slo, v.first_token_s
            if (slo.tpot_ms is None and slo.deadline_ms is None) or (
                    v.num_pending > 1 or first is None):
                continue  # no finish bound (no SLO, or TTFT only: need is inf), prefilling
            remaining = v.max_tokens - v.num_output
            if remaining <= 0:
                continue
            due = v.finish_deadline
            need = (due - now) / remaining * safety
            if need == math.inf or need <= 0:
                continue  # no bound, or lost
            is_predicted_late = step / rate[v.id] > need
            if not is_predicted_late:
                measured = measured_time_per_token(v, now, min_tokens)
                if measured is None or measured <= need:
                    continue  # on pace, as predicted and by the engine's own clock
            if need < self.cost.predict(options[v.id].work_tokens, 1) / rate[v.id]:
                continue  # lost: not even alone
            if is_predicted_late:
                target, priority = min(target, need * rate[v.id]), min(priority, v.priority)
            else:  # late by the engine's own clock: every lower priority that can wait yields
                target, priority = 0.0, min(priority, v.priority - 1)
        return target, priority

    def spare(self, v: RequestView, now: float, step: float, rate: float) -> float | None:
        """v's slack if it may sit out a step of `step` seconds at `rate` tokens per
        forward, else None."""
        spare = slack_of(v, now, step / rate)
        left = effective_deadline(v) - now
        if (v.is_prefilling or spare < self.config.min_slack_steps * step
                or spare < self.config.min_slack_share * left):
            return None
        return spare

    def _by_slack(self, decoders: Sequence[RequestView], rate: Mapping[str, float],
                  step: float, now: float, priority: int) -> list[RequestView]:
        """Who may wait, the most slack first: spare() over the batch, inlined (the per-step
        path of every step with a request at risk; the same arithmetic)."""
        out = []
        min_steps, share = self.config.min_slack_steps * step, self.config.min_slack_share
        for v in decoders:
            if v.priority > priority or v.num_pending > 1 or v.first_token_s is None:
                continue  # outranks the request at risk, or prefilling
            due = v.finish_deadline  # next_deadline too: its first token came
            due_or_horizon = v.arrival_s + BEST_EFFORT_HORIZON_S if due == math.inf else due
            left = due_or_horizon - now
            spare = ((due if v.slo.has_bounds else due_or_horizon) - now
                     - v.remaining * (step / rate[v.id]))  # slack_of
            if not (spare < min_steps or spare < share * left):
                out.append((spare, v))
        return [v for _, v in sorted(out, key=lambda x: -x[0])]



def measured_time_per_token(v: RequestView, now: float, min_tokens: int) -> float | None:
    """Mean seconds per token since v's first token, as the engine saw them (None before
    `min_tokens` tokens)."""
    if v.first_token_s is None or v.num_output < max(2, min_tokens):
        return None
    return (now - v.first_token_s) / (v.num_output - 1)
