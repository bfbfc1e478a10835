"""The SLO autoscaling policy inside Ray Serve's own machinery: the replica's custom metrics
from its Prometheus registry, the policy class as Serve's config loads and wraps it (bounds,
delays), fed a real AutoscalingContext. The deployed ramp: test_autoscale_ramp.py."""

from __future__ import annotations

from ray.serve._private.autoscaling_state import _resolve_policy_callable
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from cluster.autoscaling import CAPACITY_KEY, TREND_KEY, SLOAutoscalingPolicy, policy_config
from cluster.job import ChoiceStats
from cluster.metrics import ServerMetrics
from cluster.scaling_signals import ScalingSignals
from cluster.slo import Latency, SLOSpec, usage, verdicts
from engine.engine import EngineStats
from policies import scaling


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_signals_are_rates_of_the_replicas_own_counters() -> None:
    m, clock = ServerMetrics("tiny"), Clock()
    signals = ScalingSignals(m, clock)
    for _ in range(3):
        m.observe_rejected(429)
    m.observe_rejected(400)  # a bad request is not a capacity problem
    m.observe_queue(0.5)
    m.observe_queue(1.5)
    m.observe_engine(EngineStats(num_running=5, num_waiting=2, kv_free_blocks=25,
                                 kv_blocks=100, num_steps=0, last_step_s=0.0))
    clock.t += 2.0
    s = signals.read()
    assert s[scaling.REFUSALS] == 1.5 and s[scaling.ADMITTED] == 1.0
    assert s[scaling.QUEUE_DELAY] == 1.0 and s[scaling.LOAD] == 7
    assert s[scaling.KV_USAGE] == 0.75
    clock.t += 1.0
    again = signals.read()  # nothing new: rates fall to zero, gauges stay
    assert again[scaling.REFUSALS] == 0 and again[scaling.QUEUE_DELAY] == 0
    assert again[scaling.LOAD] == 7
    assert all(isinstance(v, float) for v in again.values())  # what Serve accepts


def test_a_replica_learns_where_it_would_start_missing_before_it_misses() -> None:
    """Finished requests' SLO usage (latency / objective) against the load: TPOT 20 ms + 5 ms
    per request in flight against a 100 ms objective = misses from load 16 on; seen up to 8."""
    m, clock = ServerMetrics("tiny"), Clock()
    signals = ScalingSignals(m, clock)
    spec = SLOSpec(ttft_ms=2000, tpot_ms=100)
    stats = ChoiceStats(4, 16, 0, 16)
    for load in range(1, 9):
        m.observe_engine(EngineStats(num_running=load, num_waiting=0, kv_free_blocks=90,
                                     kv_blocks=100, num_steps=0, last_step_s=0.0))
        signals.read()  # the load over the next interval is `load` throughout
        for _ in range(2):
            lat = Latency(0.2, (20 + 5 * load) / 1e3, 1.0)
            m.observe_finished(stats, "length", "auto", lat, verdicts(spec, lat),
                               usage(spec, lat))
        clock.t += 1.0
        s = signals.read()
    assert m.registry.get_sample_value("tandem_slo_missed_total",
                                       {"model": "tiny", "kind": "tpot"}) is None
    assert abs(s[scaling.CAPACITY] - 16.0) < 0.01
    assert usage(spec, Latency(None, None, 3.0)) == 1.5  # no first token: TTFT to the end
    assert usage(None, Latency(0.1, 0.01, 1.0)) is None


def context(config: AutoscalingConfig, metrics: dict[str, list[float]], target: int,
            state: dict | None = None) -> AutoscalingContext:
    dep = DeploymentID(name="ModelServer", app_name="tandem")
    replicas = [ReplicaID(unique_id=f"r{i}", deployment_id=dep)
                for i in range(len(metrics[scaling.LOAD]))]
    agg = {name: dict(zip(replicas, values, strict=True)) for name, values in metrics.items()}
    return AutoscalingContext(
        deployment_id=dep, deployment_name="ModelServer", app_name="tandem",
        current_num_replicas=len(replicas), target_num_replicas=target,
        running_replicas=replicas, total_num_requests=sum(metrics[scaling.LOAD]),
        total_queued_requests=0.0, aggregated_metrics=agg, raw_metrics=None,
        capacity_adjusted_min_replicas=config.min_replicas,
        capacity_adjusted_max_replicas=config.max_replicas, policy_state=state or {},
        last_scale_up_time=None, last_scale_down_time=None,
        current_time=(state or {}).get("now"), config=config)


def serve_config(**delays: float) -> AutoscalingConfig:
    return AutoscalingConfig(min_replicas=1, max_replicas=3,
                             policy=policy_config(capacity_per_replica=8), **delays)


def test_serve_loads_our_class_with_its_kwargs_and_applies_its_bounds() -> None:
    config = serve_config(upscale_delay_s=0, downscale_delay_s=0)
    assert config.policy.policy_function == "cluster.autoscaling:SLOAutoscalingPolicy"
    policy = _resolve_policy_callable(config.policy)
    assert isinstance(policy, SLOAutoscalingPolicy)
    assert policy.config.capacity_per_replica == 8
    wrapped = _apply_autoscaling_config(policy)
    # One replica, few requests in flight, but refusing 4/s of 5 arriving: wants 5, max 3.
    refusing = {scaling.LOAD: [2.0], scaling.REFUSALS: [4.0], scaling.ADMITTED: [1.0],
                scaling.SLO_MET: [1.0]}
    num, state = wrapped(context(config, refusing, target=1))
    assert num == 3 and state[CAPACITY_KEY] == 2.0
    idle = {scaling.LOAD: [0.0, 0.0, 1.0], scaling.SLO_MET: [1.0, 1.0, 1.0]}
    num, _ = wrapped(context(config, idle, target=3, state=state))
    assert num == 1  # down to min, immediately with no downscale delay


def test_serve_delays_apply_to_our_answer() -> None:
    config = serve_config(upscale_delay_s=3600, downscale_delay_s=3600)
    wrapped = _apply_autoscaling_config(_resolve_policy_callable(config.policy))
    refusing = {scaling.LOAD: [2.0], scaling.REFUSALS: [4.0], scaling.ADMITTED: [1.0]}
    num, _ = wrapped(context(config, refusing, target=1))
    assert num == 1  # wanted, but not for upscale_delay_s yet


def test_default_policy_stays_selectable() -> None:
    default = AutoscalingConfig(min_replicas=1, max_replicas=3)
    assert default.policy.is_default_policy_function()


def test_learned_capacity_and_the_load_trend_scale_up_before_a_miss() -> None:
    config = serve_config(upscale_delay_s=0, downscale_delay_s=0)
    wrapped = _apply_autoscaling_config(_resolve_policy_callable(config.policy))
    calm = {scaling.LOAD: [5.0], scaling.SLO_MET: [2.0], scaling.CAPACITY: [12.0]}
    num, state = wrapped(context(config, calm, target=1, state={"now": 100.0}))
    assert num == 1 and state[CAPACITY_KEY] == 12.0 and state[TREND_KEY] == (100.0, 5.0, 0.0)
    rising = {**calm, scaling.LOAD: [7.0]}  # 7 < 0.7 x 12; rising 0.5/s: 9.5 in 5 s
    num, state = wrapped(context(config, rising, target=1, state={**state, "now": 102.0}))
    assert num == 2 and state[TREND_KEY][2] == 0.5
