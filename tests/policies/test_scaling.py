"""policies/scaling.py with plain numbers: up on refusals, misses, queueing and KV; down only
while fewer replicas would carry the load inside the capacity they were seen to sustain."""

from __future__ import annotations

import pytest

from policies.scaling import ReplicaSignals, ScalingConfig, attainment, decide

CFG = ScalingConfig(capacity_per_replica=8, downscale_headroom=0.6)


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
                                 dict(downscale_headroom=1.5), dict(max_queue_delay_s=0)])
def test_config_checks_itself(bad: dict) -> None:
    with pytest.raises(ValueError):
        ScalingConfig(**bad)
    with pytest.raises(ValueError, match="load"):
        ReplicaSignals(load=float("nan"))
