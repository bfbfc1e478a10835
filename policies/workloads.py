"""Workloads for SLO benchmarks: Poisson arrivals of a mix of request classes.

Lengths are drawn uniformly (integers, bounds included). SLO bounds are multiples of the
latencies of the same request alone on an idle device with AR (the "SLO scale" of
DistServe), so that one workload definition means the same on any machine:
  interactive: prompt 16-48, output 16-48 tokens; TTFT <= 6x its prefill alone,
               TPOT <= 1.5x AR's time per token alone.
  batch:       prompt 32-48, output 48-96 tokens; end to end <= 4x its AR latency alone
               (prefill + output x AR time per token), no TTFT/TPOT bound.
  mixed:       each arrival is interactive or batch with probability 1/2.
  tight:       as interactive, but TPOT <= 0.7x AR's time per token alone: only
               speculation meets it (a voice agent reading faster than one AR stream).
  mixed_tight: 30 % tight, 70 % batch.
More workloads of the same form can come from a JSON file (policies/workload_spec.py).
Load is the arrival rate as a fraction of a capacity measured in the same units: the
requests per second AR sustains at a batch of `CAPACITY_BATCH` (from the cost model).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from policies.slo import SLO


class CostModel(Protocol):
    """What SLOs and capacity are derived from (policies.cost_model.CostModel or a scaled
    one)."""

    def predict(self, num_tokens: int, num_requests: int = 1) -> float: ...


CAPACITY_BATCH = 32
LOADS = {"low": 0.15, "medium": 0.3, "medium_high": 0.45, "high": 0.6, "overload": 0.9}


@dataclass(frozen=True)
class RequestClass:
    name: str
    prompt_tokens: tuple[int, int]
    output_tokens: tuple[int, int]
    ttft_scale: float | None = None  # x prefill alone
    tpot_scale: float | None = None  # x AR time per token alone
    deadline_scale: float | None = None  # x AR end to end alone

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "output_tokens"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be [lo, hi] with 1 <= lo <= hi, got [{lo}, {hi}]")
        for name in ("ttft_scale", "tpot_scale", "deadline_scale"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")


Workload = tuple[tuple[RequestClass, float], ...]  # (class, weight) pairs

INTERACTIVE = RequestClass("interactive", (16, 48), (16, 48), ttft_scale=6.0, tpot_scale=1.5)
BATCH = RequestClass("batch", (32, 48), (48, 96), deadline_scale=4.0)
TIGHT = RequestClass("tight", (16, 48), (16, 48), ttft_scale=6.0, tpot_scale=0.7)
WORKLOADS: dict[str, Workload] = {
    "interactive": ((INTERACTIVE, 1.0),),
    "batch": ((BATCH, 1.0),),
    "mixed": ((INTERACTIVE, 0.5), (BATCH, 0.5)),
    "tight": ((TIGHT, 1.0),),
    "mixed_tight": ((TIGHT, 0.3), (BATCH, 0.7)),
}


def mix_of(workload: str | Workload) -> Workload:
    return WORKLOADS[workload] if isinstance(workload, str) else workload


@dataclass(frozen=True)
class RequestSpec:
    id: str
    kind: str
    arrival_s: float
    num_prompt: int
    max_tokens: int
    slo: SLO
    prompt_index: int  # which recorded prompt (text on the engine, trace in the simulator)


def slo_for(cls: RequestClass, num_prompt: int, max_tokens: int, cost: CostModel) -> SLO:
    prefill = cost.predict(num_prompt, 1)
    tpot = cost.predict(1, 1)
    e2e = prefill + max(0, max_tokens - 1) * tpot

    def scaled(scale: float | None, base: float) -> float | None:
        return None if scale is None else round(scale * base * 1e3, 1)

    return SLO(ttft_ms=scaled(cls.ttft_scale, prefill), tpot_ms=scaled(cls.tpot_scale, tpot),
               deadline_ms=scaled(cls.deadline_scale, e2e))


def mean_output(workload: str | Workload) -> float:
    mix = mix_of(workload)
    total = sum(w for _, w in mix)
    return sum(w * sum(c.output_tokens) / 2 for c, w in mix) / total


def capacity_rps(workload: str | Workload, cost: CostModel, batch: int = CAPACITY_BATCH) -> float:
    """Requests per second that AR completes at a steady batch of `batch`."""
    tokens_per_s = batch / cost.predict(batch, batch)
    return tokens_per_s / mean_output(workload)


def generate(workload: str | Workload, rate_rps: float, num_requests: int, cost: CostModel,
             num_prompts: int, seed: int = 0) -> list[RequestSpec]:
    rng = random.Random(seed)
    mix = mix_of(workload)
    classes, weights = [c for c, _ in mix], [w for _, w in mix]
    t, specs = 0.0, []
    for i in range(num_requests):
        t += rng.expovariate(rate_rps)
        cls = rng.choices(classes, weights)[0]
        num_prompt = rng.randint(*cls.prompt_tokens)
        max_tokens = rng.randint(*cls.output_tokens)
        specs.append(RequestSpec(f"{cls.name}-{i}", cls.name, t, num_prompt, max_tokens,
                                 slo_for(cls, num_prompt, max_tokens, cost),
                                 rng.randrange(num_prompts)))
    return specs
