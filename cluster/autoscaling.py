"""The SLO-aware autoscaling policy, as Ray Serve's own custom policy
(`autoscaling_config.policy`), not a controller of our own:

    autoscaling_config:
      min_replicas: 1
      max_replicas: 3
      upscale_delay_s: 3
      downscale_delay_s: 20
      policy:
        policy_function: cluster.autoscaling:SLOAutoscalingPolicy
        policy_kwargs: {capacity_per_replica: 8, target_attainment: 0.95}

Serve's controller instantiates the class once with policy_kwargs (policies.scaling.
ScalingConfig's fields) and calls it every control-loop tick with an AutoscalingContext whose
aggregated_metrics hold each replica's custom metrics (cluster/scaling_signals.py, reported
by ModelServer.record_autoscaling_stats). Serve applies min/max replicas and the up/down
delays to the answer. Leave `policy` out for Serve's default (requests in flight per replica
against target_ongoing_requests).
"""

from __future__ import annotations

import logging
from typing import Any

from policies import scaling

log = logging.getLogger("ray.serve")

CAPACITY_KEY = "tandem_capacity"
TREND_KEY = "tandem_trend"  # (time, load, per second) of policies.scaling.LoadTrend
REASON_KEY = "tandem_reason"
WANTED_KEY = "tandem_wanted"
LOGGED_KEY = "tandem_logged_capacity"
POLICY_PATH = "cluster.autoscaling:SLOAutoscalingPolicy"


class SLOAutoscalingPolicy:
    def __init__(self, **kwargs: Any) -> None:
        self.config = scaling.ScalingConfig(**kwargs)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        """ctx: ray.serve.config.AutoscalingContext."""
        replicas = signals_of(ctx.aggregated_metrics or {}, list(ctx.running_replicas))
        state = ctx.policy_state
        capacity = float(state.get(CAPACITY_KEY, self.config.capacity_per_replica))
        trend = load_trend(state.get(TREND_KEY), ctx.current_time, replicas)
        d = scaling.decide(ctx.current_num_replicas, ctx.target_num_replicas, replicas,
                           capacity, self.config, trend.per_s if trend else 0.0)
        num = min(max(d.num_replicas, ctx.capacity_adjusted_min_replicas),
                  ctx.capacity_adjusted_max_replicas)
        if num != ctx.target_num_replicas and num != ctx.policy_state.get(WANTED_KEY):
            log.info("tandem autoscaling %s: %d -> %d (%s)", ctx.deployment_name,
                     ctx.target_num_replicas, num, d.reason)  # once per new wish
        logged = state.get(LOGGED_KEY)
        if logged is None or abs(d.capacity - logged) > 0.25 * logged:
            log.info("tandem autoscaling %s: capacity %.1f per replica (%s)",
                     ctx.deployment_name, d.capacity, d.reason)
            logged = d.capacity
        return num, {CAPACITY_KEY: d.capacity, REASON_KEY: d.reason, WANTED_KEY: num,
                     LOGGED_KEY: logged,
                     TREND_KEY: None if trend is None else (trend.t, trend.load, trend.per_s)}


def load_trend(last: tuple[float, float, float] | None, now: float | None,
               replicas: list[scaling.ReplicaSignals]) -> scaling.LoadTrend | None:
    """The total load's trend, carried between calls in the policy state."""
    if now is None or not replicas:
        return None
    load = sum(r.load for r in replicas)
    if last is None:
        return scaling.LoadTrend(now, load)
    return scaling.LoadTrend(*last).after(now, load)


def signals_of(metrics: dict[str, dict[Any, float]],
               running: list[Any]) -> list[scaling.ReplicaSignals]:
    """Per running replica that has reported (a starting one has not): its signals."""
    reported = metrics.get(scaling.LOAD, {})
    return [scaling.ReplicaSignals.from_metrics(
                {name: metrics.get(name, {}).get(rid, 0.0) for name in scaling.SIGNALS})
            for rid in running if rid in reported]


def policy_config(**kwargs: Any) -> dict[str, Any]:
    """The `policy` entry of an autoscaling_config that selects this policy."""
    scaling.ScalingConfig(**kwargs)  # checked here, not first on Serve's controller
    return {"policy_function": POLICY_PATH, "policy_kwargs": kwargs}
