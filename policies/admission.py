"""Admission: refuse, with a reason, a request whose SLO cannot be met.

503: not even alone on an idle device (its prefill alone outlasts its TTFT bound, or no
     option decodes within `alone_margin` of its TPOT bound, or both together miss its
     deadline).
429: feasible alone but not now (`shed_load`): the prefill work queued ahead of it and
     the running batch predict a first token later than its TTFT bound, or the running
     requests that cannot sit steps out for it (no slack) make every option decode
     slower than its TPOT bound (never with none of those running: a request feasible
     alone is not shed from an engine it would have to itself). Shedding it early keeps the
     device for requests that can still be served in time.
A best-effort request is never refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from policies.cost_model import CostModel
from policies.ordering import urgency_key
from policies.request_view import RequestView


@dataclass(frozen=True)
class Refusal:
    reason: str
    status: int  # 503 infeasible even alone, 429 overloaded now


@dataclass(frozen=True)
class AdmissionConfig:
    shed_load: bool = True
    max_prefill_chunk: int = 1024
    # A pace alone up to this share slower than the TPOT bound is not "infeasible alone":
    # it is priced at the mean acceptance of all requests, while a newcomer's own is
    # unknown and prompts differ (bench/slo_profile.json: per-prompt tokens per forward of
    # quadratic speculation spread 14-47 % around their mean), and that mean moves by
    # 10 % over a few requests. A 503 there on an idle engine froze the estimate it rested
    # on (nothing ran to correct it) and refused every later arrival of a run (CPU tight
    # medium_high: 219 of 300 in one seed; BENCHMARKS.md, "Eighth session").
    alone_margin: float = 0.2


class AdmissionControl:
    def __init__(self, cost: CostModel, config: AdmissionConfig = AdmissionConfig()) -> None:
        self.cost, self.config = cost, config

    def prefill_s(self, num_tokens: int, base_tokens: int = 0, base_requests: int = 0) -> float:
        """Seconds to prefill num_tokens in chunks, sharing each step with a base batch."""
        chunk, total = self.config.max_prefill_chunk, 0.0
        while num_tokens > 0:
            n = min(chunk, num_tokens)
            total += self.cost.predict(base_tokens + n, base_requests + 1)
            num_tokens -= n
        return total

    def check(self, v: RequestView, now: float, best_time_per_token: float,
              running: Sequence[RequestView] = (), waiting: Sequence[RequestView] = (),
              work_of: Callable[[RequestView], int] = lambda v: 1,
              pace_under_load: Callable[[], float] | None = None) -> Refusal | None:
        """best_time_per_token: the fastest pace any of its options reaches alone;
        pace_under_load: the fastest beside the running requests that will not wait."""
        if v.slo.best_effort or not v.has_slo:
            return None
        refusal = self._alone(v, best_time_per_token)
        if refusal is None and self.config.shed_load:
            refusal = self._under_load(v, now, running, waiting, work_of)
        if refusal is None and self.config.shed_load and pace_under_load is not None:
            refusal = self._pace_under_load(v, pace_under_load, len(running))
        return refusal

    @staticmethod
    def _pace_under_load(v: RequestView, pace: Callable[[], float],
                         num_running: int) -> Refusal | None:
        # With no running request that cannot wait, shedding v frees nothing for anyone
        # (those with slack sit steps out for it), and it passed the check alone: the pace
        # then differs from alone only by the mean prefill interference, an estimate no step
        # updates while the engine idles. Refusing on it locked an idle engine out for whole
        # runs (BENCHMARKS.md, "#12's CPU-engine target, seventh session").
        if v.slo.tpot_ms is None or v.max_tokens <= 1 or num_running == 0:
            return None
        tpt = pace()
        if tpt * 1e3 > v.slo.tpot_ms:
            return Refusal(f"overloaded: predicted time per output token ~{tpt * 1e3:.1f} ms "
                           f"> tpot_ms={v.slo.tpot_ms:g} beside {num_running} running "
                           f"requests that cannot wait", 429)
        return None

    def _alone(self, v: RequestView, tpt: float) -> Refusal | None:
        slo = v.slo
        ttft = self.prefill_s(v.num_prompt)
        if slo.ttft_ms is not None and ttft * 1e3 > slo.ttft_ms:
            return Refusal(f"ttft_ms={slo.ttft_ms:g} cannot be met even alone: prefilling "
                           f"{v.num_prompt} tokens takes ~{ttft * 1e3:.0f} ms", 503)
        if (slo.tpot_ms is not None and v.max_tokens > 1
                and tpt * 1e3 > slo.tpot_ms * (1 + self.config.alone_margin)):
            return Refusal(f"tpot_ms={slo.tpot_ms:g} cannot be met even alone: the fastest "
                           f"mode takes ~{tpt * 1e3:.1f} ms per token", 503)
        e2e = ttft + max(0, v.max_tokens - 1) * tpt
        if slo.deadline_ms is not None and e2e * 1e3 > slo.deadline_ms:
            return Refusal(f"deadline_ms={slo.deadline_ms:g} cannot be met even alone: "
                           f"{v.max_tokens} tokens take ~{e2e * 1e3:.0f} ms", 503)
        return None

    def _under_load(self, v: RequestView, now: float, running: Sequence[RequestView],
                    waiting: Sequence[RequestView],
                    work_of: Callable[[RequestView], int]) -> Refusal | None:
        if v.slo.ttft_ms is None:
            return None
        mine = urgency_key(v, now)
        ahead = sum(w.num_pending for w in waiting if urgency_key(w, now) <= mine)
        decode = sum(work_of(r) for r in running if not r.is_prefilling)
        # One step in flight, then the prefills ahead of it and its own, beside the batch.
        wait = self.cost.predict(decode, len(running)) if running else 0.0
        ttft = wait + self.prefill_s(ahead + v.num_prompt, decode, len(running))
        due = v.arrival_s + v.slo.ttft_ms / 1e3 - now
        if ttft > due:
            return Refusal(f"overloaded: predicted time to first token ~{ttft * 1e3:.0f} ms "
                           f"> ttft_ms={v.slo.ttft_ms:g} ({len(running)} running, "
                           f"{len(waiting)} waiting)", 429)
        return None
