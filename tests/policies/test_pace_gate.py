"""The pace gate (policies/pace_gate.py): a deadline-only request waits to start while one
more decoder would slow the running batch past the pace its deadlines need; it is queued,
not refused, keeps its place in the order, and a request that is lost already does not hold
back one that can still be met. The scheduler starts a held request when nothing else runs.
Synthetic device: a step of n decoders at AR takes 8 + 0.5 n ms."""

from __future__ import annotations

from dataclasses import replace

from engine.engine import LLMEngine
from engine.params import DecodeParams, Mode, SamplingParams
from engine.policy import FirstComePolicy
from engine.simulator import SimConfig
from engine.trace_executor import SIM_MODEL, SimClock, TraceExecutor
from policies.decision import BatchDecision, SchedulerView
from policies.pace_gate import PaceGateConfig
from policies.policy import PolicyConfig, SLOPolicy
from policies.slo import SAFETY, SLO
from policies.step_clock import StepClock
from tests.policies.helpers import synthetic_profile, view

NOW = 100.0
GATED = PolicyConfig(pace_gate=PaceGateConfig(enabled=True))  # off by default


def running(n: int, limit_s: float) -> list:
    """n decoders (63 tokens left) that need steps of at most limit_s to meet deadlines."""
    left = limit_s * 63 / SAFETY
    return [view(f"r{i}", NOW, deadline_ms=(left + 0.05) * 1e3) for i in range(n)]


def waiting(rid: str, **slo) -> object:  # noqa: ANN003
    return view(rid, NOW, num_output=0, **slo)


def held(policy: SLOPolicy, decoders: list, queue: list) -> frozenset[str]:
    order = policy.order(decoders + queue, NOW)
    return policy.plan(SchedulerView(tuple(decoders), tuple(queue), 2048, 64, 1024),
                       NOW).held if order else frozenset()


def test_starts_as_many_as_keep_the_running_deadlines_on_pace():
    policy = SLOPolicy(synthetic_profile(), GATED)
    batch = running(10, 0.0138)  # 11 decoders: 13.5 ms fits, 12: 14.0 ms does not
    queue = [waiting(f"w{i}", deadline_ms=600_000.0) for i in range(3)]
    assert held(policy, batch, queue) == {"w1", "w2"}
    assert held(policy, running(10, 0.030), queue) == frozenset()  # plenty of room
    off = SLOPolicy(synthetic_profile())
    assert held(off, batch, queue) == frozenset()  # the gate off (the default): everyone starts


def test_keeps_order_and_never_holds_a_request_with_a_first_token_bound():
    policy = SLOPolicy(synthetic_profile(), GATED)
    queue = [waiting("w0", deadline_ms=600_000.0), waiting("w1", deadline_ms=600_001.0),
             waiting("i", ttft_ms=600_002.0, tpot_ms=500.0)]
    # Room for none: the first waits, so the later deadline-only one waits behind it.
    assert held(policy, running(10, 0.013), queue) == {"w0", "w1"}


def test_a_lost_request_does_not_hold_back_one_that_can_still_be_met():
    policy = SLOPolicy(synthetic_profile(), GATED)
    lost = replace(waiting("lost", deadline_ms=100.0), arrival_s=NOW - 1.0)  # due long ago
    fresh = waiting("fresh", deadline_ms=600_000.0)
    assert held(policy, running(10, 0.0138), [lost, fresh]) == {"lost"}
    assert held(policy, running(10, 0.030), [lost, fresh]) == frozenset()  # both fit


def test_an_idle_engine_starts_what_fits_the_newcomers_own_deadlines():
    policy = SLOPolicy(synthetic_profile(), GATED)
    lost = replace(waiting("lost", deadline_ms=100.0), arrival_s=NOW - 1.0)
    assert held(policy, [], [lost, waiting("w", deadline_ms=600_000.0)]) == frozenset()
    # Two fresh requests whose own deadline allows one decoder's step (8.5 ms) but not two.
    tight = [waiting(f"t{i}", deadline_ms=(0.0088 * 64 / SAFETY + 0.05) * 1e3)
             for i in range(2)]
    assert held(policy, [], tight) == {"t1"}


class HoldAll(FirstComePolicy):
    def plan(self, view: SchedulerView) -> BatchDecision:
        decision = super().plan(view)
        return replace(decision, held=frozenset(v.id for v in view.waiting))


def test_the_scheduler_starts_held_requests_only_when_nothing_else_runs():
    profile, clock = synthetic_profile(), SimClock()
    executor = TraceExecutor(profile, StepClock(profile.cost, 0.0), clock)
    eng = LLMEngine(executor, SIM_MODEL, None, SimConfig().engine_config(),
                    HoldAll(Mode.AR), clock)
    for rid in ("a", "b"):
        eng.add_request(list(range(10, 30)), SamplingParams(max_tokens=3, ignore_eos=True),
                        DecodeParams(mode=Mode.AR), rid, slo=SLO(deadline_ms=1e6))
    eng.step()  # nothing runs: the held requests start rather than an empty step
    assert {r.id for r in eng.scheduler.running} == {"a", "b"}
    eng.add_request(list(range(10, 30)), SamplingParams(max_tokens=3, ignore_eos=True),
                    DecodeParams(mode=Mode.AR), "c", slo=SLO(deadline_ms=1e6))
    eng.step()  # a and b decode: c waits
    assert [r.id for r in eng.scheduler.waiting] == ["c"]
    while eng.has_unfinished():
        eng.step()  # and starts once they are done
