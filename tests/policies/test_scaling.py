"""policies/scaling.py with plain numbers: up on refusals, misses, queueing and KV; down only
while fewer replicas would carry the load inside the capacity they were seen to sustain."""

from __future__ import annotations

import pytest

from policies.scaling import LoadTrend, ReplicaSignals, ScalingConfig, attainment, decide

CFG = ScalingConfig(capacity_per_replica=8, upscale_headroom=0.7, downscale_headroom=0.6)


def calm(load: float) -> ReplicaSignals:
    return ReplicaSignals(load=load, admitted_per_s=2.0, slo_met_per_s=4.0)


def test_refusals_scale_up_by_the_refused_share() -> None:
    # 3 requests/s arrive at one replica, 1/s admitted: it carries a third of the demand.
    r = ReplicaSignals(load=6, refusals_per_s=2.0, admitted_per_s=1.0, slo_met_per_s=1.0)
    d = decide(1, 1, [r], 8.0, CFG)
    assert d.num_replicas == 3 and d.reason.startswith("up: refusing")
    assert d.capacity == 6  # it refused at load 6: that is what it carries


def test_low_in_flight_count_does_not_hide_refusals() -> None:
    """The design risk of issue 16: refusals keep the ongoing count low."""
    r = ReplicaSignals(load=1, refusals_per_s=0.5, admitted_per_s=1.0, slo_met_per_s=1.0)
    assert decide(1, 1, [r], 8.0, CFG).num_replicas == 2


@pytest.mark.parametrize("signals, why", [
    (ReplicaSignals(load=2, admitted_per_s=1, slo_met_per_s=8, slo_missed_per_s=2), "attain"),
    (ReplicaSignals(load=2, admitted_per_s=1, slo_met_per_s=1, queue_delay_s=3.0), "queue"),
    (ReplicaSignals(load=2, admitted_per_s=1, slo_met_per_s=1, kv_usage=0.97), "KV"),
])
def test_misses_queue_delay_and_kv_scale_up_by_one(signals: ReplicaSignals, why: str) -> None:
    d = decide(2, 2, [signals, calm(1)], 8.0, CFG)
    assert d.num_replicas == 3 and why in d.reason


def test_up_never_lowers_a_target_whose_replicas_are_starting() -> None:
    r = ReplicaSignals(load=4, refusals_per_s=0.2, admitted_per_s=2.0, slo_met_per_s=2.0)
    assert decide(1, 3, [r], 8.0, CFG).num_replicas == 3


def test_down_only_while_the_rest_carries_the_load_inside_capacity() -> None:
    # 3 replicas at load 3 each = 9 in flight; capacity 8 x headroom 0.6 = 4.8 per replica.
    d = decide(3, 3, [calm(3)] * 3, 8.0, CFG)
    assert d.num_replicas == 2 and d.reason.startswith("down")
    assert decide(3, 3, [calm(5)] * 3, 8.0, CFG).num_replicas == 3  # 15 needs 4 > 3
    assert decide(3, 3, [calm(0)] * 3, 8.0, CFG).num_replicas == 1


def test_no_down_while_anything_presses() -> None:
    busy = ReplicaSignals(load=0.5, admitted_per_s=1, slo_met_per_s=1, queue_delay_s=2.0)
    assert decide(3, 3, [calm(0), calm(0), busy], 8.0, CFG).num_replicas >= 3


def test_capacity_is_learned_from_what_replicas_sustain() -> None:
    d = decide(2, 2, [calm(12), calm(3)], 8.0, CFG)
    assert d.capacity == 12  # nothing refused or missed at 12 in flight
    missed = ReplicaSignals(load=20, admitted_per_s=1, slo_met_per_s=99, slo_missed_per_s=1)
    assert decide(2, 2, [missed, calm(3)], 8.0, CFG).capacity == 8  # 20 is not proof


def test_no_signals_holds_and_attainment_counts_refusals_as_misses() -> None:
    assert decide(2, 3, [], 8.0, CFG).num_replicas == 3
    r = ReplicaSignals(slo_met_per_s=3, slo_missed_per_s=0.5, refusals_per_s=0.5)
    assert attainment([r]) == pytest.approx(0.75)
    assert attainment([ReplicaSignals()]) == 1.0


@pytest.mark.parametrize("bad", [dict(target_attainment=0), dict(capacity_per_replica=0),
                                 dict(downscale_headroom=0.8), dict(max_queue_delay_s=0),
                                 dict(lead_s=-1)])
def test_config_checks_itself(bad: dict) -> None:
    with pytest.raises(ValueError):
        ScalingConfig(**bad)
    with pytest.raises(ValueError, match="load"):
        ReplicaSignals(load=float("nan"))


# --- scaling on learned capacity, before misses (synthetic metric sequences) ----------------

NEW = ScalingConfig(capacity_per_replica=8)  # the defaults: up at 0.7, down at 0.5 x capacity


def replica(load: float, capacity: float = 12.0) -> ReplicaSignals:
    """A replica that meets every SLO and reports the capacity it learned."""
    return ReplicaSignals(load=load, admitted_per_s=1.0, slo_met_per_s=2.0, capacity=capacity)


def run(loads: list[float], cfg: ScalingConfig | None = None, start: int = 1) -> list[int]:
    """Replicas after each tick of a total load, spread evenly over the running replicas
    (they start at once: Serve's delays are not modelled here)."""
    cfg = cfg or NEW
    n, capacity, out = start, cfg.capacity_per_replica, []
    for total in loads:
        d = decide(n, n, [replica(total / n)] * n, capacity, cfg)
        n, capacity = min(max(d.num_replicas, 1), 3), d.capacity
        out.append(n)
    return out


def test_a_ramp_scales_up_before_any_miss_at_the_learned_capacity() -> None:
    # Capacity 12: up once the load passes 0.7 x 12 = 8.4 per replica, no miss reported.
    d = decide(1, 1, [replica(9.0)], 8.0, NEW)
    assert d.num_replicas == 2 and d.capacity == 12 and "ahead" in d.reason
    assert decide(1, 1, [replica(8.0)], 8.0, NEW).num_replicas == 1
    assert run([2, 5, 8, 9, 12, 17, 20, 24, 26, 26]) == [1, 1, 1, 2, 2, 3, 3, 3, 3, 3]


def test_hysteresis_keeps_the_count_through_noise_around_a_boundary() -> None:
    # Up at 8.4 per replica, down only once the rest would carry it at 0.5 x 12 = 6.
    noisy = [8.0, 9.0, 8.0, 9.5, 7.5, 9.0, 8.2, 9.8]
    assert run(noisy) == [1, 2, 2, 2, 2, 2, 2, 2]
    assert run([14, 12, 10, 7, 5.5, 3], start=3) == [3, 2, 2, 2, 1, 1]


def test_down_never_while_the_rest_would_miss() -> None:
    # 3 replicas at 4 each: 12 on 2 replicas is 6 each = 0.5 x capacity: allowed, not below.
    assert decide(3, 3, [replica(4.0)] * 3, 8.0, NEW).num_replicas == 2
    assert decide(3, 3, [replica(4.5)] * 3, 8.0, NEW).num_replicas == 3
    low = [replica(4.0, capacity=6.0)] * 3  # slower replicas: 12 would need 4 at 0.5 x 6
    assert decide(3, 3, low, 8.0, NEW).num_replicas >= 3


def test_a_rising_trend_scales_up_lead_s_ahead_and_a_falling_one_waits() -> None:
    # 6 now, rising 1/s: 11 in lead_s = 5 s > 8.4.
    assert decide(1, 1, [replica(6.0)], 8.0, NEW, trend_per_s=1.0).num_replicas == 2
    assert decide(1, 1, [replica(6.0)], 8.0, NEW, trend_per_s=0.0).num_replicas == 1
    # Falling: the down decision uses the load now, not a guess.
    assert decide(2, 2, [replica(4.0)] * 2, 8.0, NEW, trend_per_s=-5).num_replicas == 2


def test_fitted_capacity_wins_over_clean_loads_and_refusals_cap_it() -> None:
    assert decide(2, 2, [replica(3, 10), replica(3, 14)], 8.0, NEW).capacity == 12
    unknown = ReplicaSignals(load=9, admitted_per_s=1, slo_met_per_s=1)
    assert decide(2, 2, [replica(3, 10), unknown], 8.0, NEW).capacity == 10
    refusing = ReplicaSignals(load=7, refusals_per_s=1, admitted_per_s=1, capacity=20)
    assert decide(1, 1, [refusing], 8.0, NEW).capacity == 7


def test_load_trend_is_measured_over_its_span() -> None:
    t = LoadTrend(0.0, 2.0)
    assert t.after(1.0, 9.0) is t  # too soon to say
    t = t.after(2.0, 6.0)
    assert t.per_s == pytest.approx(1.0)  # (6 - 2) / 2, averaged with 0
    assert t.after(4.0, 6.0).per_s == pytest.approx(0.5)


def test_one_request_per_replica_is_always_carried() -> None:
    # A capacity of 1 (every request near its SLO): one light client fits one replica.
    assert decide(2, 2, [replica(0.5, 1.0)] * 2, 8.0, NEW).num_replicas == 1
    assert decide(1, 1, [replica(3.0, 1.0)], 8.0, NEW).num_replicas == 3
