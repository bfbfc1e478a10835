"""How many model-server replicas the SLOs need: a pure function of what each replica
reports (cluster/scaling_signals.py) and of one learned number, a replica's capacity: the
load (requests running + waiting) at which it starts to miss its SLOs.

Why not requests in flight: admission refuses (429) a request predicted to miss its SLO, so
exactly when more replicas are needed the refused requests never count as in flight and a
replica's ongoing count stays low. Refusals are predicted misses; they, observed misses, the
queue delay and KV use say "up"; the load the replicas carry, measured against the capacity
they were seen to sustain, says whether fewer would still meet every SLO.

Up, before misses: when the load predicted `lead_s` ahead (the look-back average plus its
trend: a replica takes seconds to start) spread over the running replicas exceeds
`upscale_headroom` of capacity: to the fewest that keep it under.
Up, after the fact, when any of: refusals per second above `max_refusals_per_s`; SLO
attainment (met / (met + missed + refused), per SLO verdict) under `target_attainment`; mean
queue delay over `max_queue_delay_s`; KV use over `max_kv_usage`. To how many: arrivals /
admitted times the running replicas (the refused share is the missing capacity), at least
one more, at least what the load needs.
Down, when none of those holds anywhere and the load spread over fewer replicas stays under
`downscale_headroom` of capacity (below `upscale_headroom`: the gap is the hysteresis that
keeps a replica count from flapping): to the fewest that do. Either way one request per
replica is always carried: admission refuses (400) an SLO that no replica meets alone.
Capacity: each replica reports the load at which its own finished requests' SLO usage
(latency / objective) is predicted to reach 1 (policies/capacity.py); the policy takes their
mean. Until any replica has learned one it starts at `capacity_per_replica` and follows
observation: replicas that refuse nothing and miss nothing at load L show at least L. A
replica that refuses at load L shows capacity at most ~L, whatever its fit says.
Ray Serve applies min/max replicas and the up/down delays on top of the answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# The signal names a replica reports (cluster/scaling_signals.py) and the policy reads.
LOAD = "tandem_load"
REFUSALS = "tandem_refusals_per_s"
ADMITTED = "tandem_admitted_per_s"
SLO_MET = "tandem_slo_met_per_s"
SLO_MISSED = "tandem_slo_missed_per_s"
QUEUE_DELAY = "tandem_queue_delay_s"
KV_USAGE = "tandem_kv_usage"
CAPACITY = "tandem_capacity"
SIGNALS = (LOAD, REFUSALS, ADMITTED, SLO_MET, SLO_MISSED, QUEUE_DELAY, KV_USAGE, CAPACITY)


@dataclass(frozen=True)
class ReplicaSignals:
    """One replica's report, averaged over Serve's look-back window."""

    load: float = 0.0  # requests running + waiting
    refusals_per_s: float = 0.0  # 429s: predicted to miss their SLO beside the current load
    admitted_per_s: float = 0.0  # requests that reached the engine's first step
    slo_met_per_s: float = 0.0  # SLO verdicts met by finished requests
    slo_missed_per_s: float = 0.0
    queue_delay_s: float = 0.0  # mean arrival -> first step
    kv_usage: float = 0.0  # share of KV blocks in use
    capacity: float = 0.0  # the load at which it is predicted to start missing; 0: unknown

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: {value} (a finite number >= 0)")

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> ReplicaSignals:
        return cls(metrics.get(LOAD, 0.0), metrics.get(REFUSALS, 0.0),
                   metrics.get(ADMITTED, 0.0), metrics.get(SLO_MET, 0.0),
                   metrics.get(SLO_MISSED, 0.0), metrics.get(QUEUE_DELAY, 0.0),
                   metrics.get(KV_USAGE, 0.0), metrics.get(CAPACITY, 0.0))


@dataclass(frozen=True)
class ScalingConfig:
    target_attainment: float = 0.95
    max_refusals_per_s: float = 0.0
    max_queue_delay_s: float = 1.0
    max_kv_usage: float = 0.9
    capacity_per_replica: float = 8.0
    upscale_headroom: float = 0.7
    downscale_headroom: float = 0.5
    lead_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.target_attainment <= 1:
            raise ValueError("target_attainment: in (0, 1]")
        if self.max_refusals_per_s < 0 or self.max_queue_delay_s <= 0:
            raise ValueError("max_refusals_per_s >= 0 and max_queue_delay_s > 0")
        if not 0 < self.max_kv_usage <= 1 or not 0 < self.upscale_headroom <= 1:
            raise ValueError("max_kv_usage and upscale_headroom: in (0, 1]")
        if not 0 < self.downscale_headroom <= self.upscale_headroom:
            raise ValueError("downscale_headroom: in (0, upscale_headroom]")
        if self.capacity_per_replica <= 0:
            raise ValueError("capacity_per_replica: > 0")
        if not 0 <= self.lead_s <= 600:
            raise ValueError("lead_s: in [0, 600]")


@dataclass(frozen=True)
class ScalingDecision:
    num_replicas: int
    capacity: float  # what the replicas were seen to carry inside their SLOs
    reason: str


@dataclass(frozen=True)
class LoadTrend:
    """How fast the total load changes: measured over at least `span_s` seconds, each new
    measurement averaged with the last (the load is already Serve's look-back average)."""

    t: float
    load: float
    per_s: float = 0.0
    span_s: float = 2.0

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.t, self.load, self.per_s)) \
                or self.span_s <= 0:
            raise ValueError(f"LoadTrend: finite t, load, per_s and span_s > 0: {self}")

    def after(self, now: float, load: float) -> LoadTrend:
        dt = now - self.t
        if dt < self.span_s:
            return self
        return LoadTrend(now, load, 0.5 * (self.per_s + (load - self.load) / dt), self.span_s)


def attainment(replicas: Sequence[ReplicaSignals]) -> float:
    """Met / (met + missed + refused) over all replicas; 1.0 with nothing to judge."""
    met = sum(r.slo_met_per_s for r in replicas)
    bad = sum(r.slo_missed_per_s + r.refusals_per_s for r in replicas)
    return 1.0 if met + bad <= 0 else met / (met + bad)


def learn_capacity(replicas: Sequence[ReplicaSignals], capacity: float,
                   cfg: ScalingConfig) -> float:
    """The replicas' learned capacity (their mean), else what the last one was, raised by
    loads carried cleanly; capped by the load at which replicas refuse."""
    fitted = [r.capacity for r in replicas if r.capacity > 0]
    if fitted:
        capacity = sum(fitted) / len(fitted)
    else:
        clean = [r.load for r in replicas if r.slo_missed_per_s == 0
                 and r.refusals_per_s <= cfg.max_refusals_per_s]
        capacity = max([capacity, *clean])
    refusing = [r.load for r in replicas if r.refusals_per_s > cfg.max_refusals_per_s]
    if refusing:
        capacity = min(capacity, sum(refusing) / len(refusing))
    return max(1.0, capacity)


def pressure(replicas: Sequence[ReplicaSignals], cfg: ScalingConfig) -> str | None:
    """Why the replicas need help, or None."""
    refused = sum(r.refusals_per_s for r in replicas)
    if refused > cfg.max_refusals_per_s:
        return f"refusing {refused:.2f}/s"
    att = attainment(replicas)
    if att < cfg.target_attainment:
        return f"SLO attainment {att:.2f} < {cfg.target_attainment}"
    delay = max(r.queue_delay_s for r in replicas)
    if delay > cfg.max_queue_delay_s:
        return f"queue delay {delay:.2f} s > {cfg.max_queue_delay_s} s"
    kv = max(r.kv_usage for r in replicas)
    if kv > cfg.max_kv_usage:
        return f"KV use {kv:.2f} > {cfg.max_kv_usage}"
    return None


def decide(num_running: int, target: int, replicas: Sequence[ReplicaSignals],
           capacity: float, cfg: ScalingConfig, trend_per_s: float = 0.0) -> ScalingDecision:
    """num_running: replicas serving now (those reporting: `replicas`); target: Serve's
    current target (more while replicas start); trend_per_s: how fast the total load has
    been changing. Returns the replicas wanted."""
    if not replicas or num_running <= 0:
        return ScalingDecision(target, capacity, "no signals yet")
    capacity = learn_capacity(replicas, capacity, cfg)
    load = sum(r.load for r in replicas)
    ahead = max(load, load + trend_per_s * cfg.lead_s)  # a falling trend waits for the load
    # Per replica: up over upscale_at, down while under downscale_at; one request alone is
    # always carried (admission refuses, 400, an SLO no replica meets even alone).
    upscale_at = max(1.0, capacity * cfg.upscale_headroom)
    downscale_at = max(1.0, capacity * cfg.downscale_headroom)
    need = math.ceil(ahead / upscale_at)
    why = pressure(replicas, cfg)
    if why is not None:
        admitted = sum(r.admitted_per_s for r in replicas)
        arriving = admitted + sum(r.refusals_per_s for r in replicas)
        want = max(num_running + 1, need)
        if admitted > 0:
            want = max(want, math.ceil(num_running * arriving / admitted))
        return ScalingDecision(max(target, want), capacity, f"up: {why}")
    if need > num_running:
        return ScalingDecision(max(target, need), capacity,
                               f"up: load {ahead:.1f} ahead > {num_running} x "
                               f"{upscale_at:.1f} (capacity {capacity:.1f})")
    fewest = max(1, math.ceil(ahead / downscale_at))
    if fewest < num_running:
        return ScalingDecision(min(target, fewest), capacity,
                               f"down: load {load:.1f} fits {fewest} x {downscale_at:.1f} "
                               f"(capacity {capacity:.1f})")
    return ScalingDecision(target, capacity, "hold")
