"""The scheduler/policy seam: one plan per step from a read-only view, observations as data,
nothing stale after a failed step, a broken decision fails loudly."""

from __future__ import annotations

import pytest

from engine.engine import LLMEngine, StepFailed
from engine.params import DecodeParams, Mode, SamplingParams
from engine.plan import ChunkWork, StepOutput, StepPlan
from engine.policy import FirstComePolicy, PolicyError, SchedulingPolicy
from engine.simulator import SimConfig
from engine.slo_policy import SLOSchedulingPolicy
from engine.trace_executor import SIM_MODEL, SimClock, TraceExecutor
from models.batch import Chunk
from policies.decision import BatchDecision, SchedulerView
from policies.modes import ChunkKind
from policies.policy import SLOPolicy
from policies.slo import SLO
from policies.step_clock import StepClock
from tests.policies.helpers import synthetic_profile


class Spy(SchedulingPolicy):
    """Passes every call to an inner policy and keeps what crossed the seam."""

    def __init__(self, inner: SchedulingPolicy) -> None:
        self.inner = inner
        self.calls: list[tuple[SchedulerView, BatchDecision]] = []

    def plan(self, view: SchedulerView) -> BatchDecision:
        decision = self.inner.plan(view)
        self.calls.append((view, decision))
        return decision

    def admit(self, request, view) -> None:  # noqa: ANN001
        self.inner.admit(request, view)


class FlakyExecutor(TraceExecutor):
    fail_next = False

    def step(self, plan: StepPlan) -> StepOutput:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("shard worker died")
        return super().step(plan)


def make(policy_of) -> tuple[LLMEngine, Spy, FlakyExecutor, SLOPolicy]:  # noqa: ANN001
    profile = synthetic_profile()
    clock = SimClock()
    slo_policy = SLOPolicy(profile)
    spy = Spy(policy_of(slo_policy, clock))
    executor = FlakyExecutor(profile, StepClock(profile.cost, 0.0), clock)
    eng = LLMEngine(executor, SIM_MODEL, None, SimConfig().engine_config(), spy, clock)
    return eng, spy, executor, slo_policy


def add(eng: LLMEngine, rid: str, n: int = 20) -> None:
    eng.add_request(list(range(10, 10 + n)), SamplingParams(max_tokens=12, ignore_eos=True),
                    DecodeParams(mode=Mode.AUTO), rid, slo=SLO(tpot_ms=30.0))


def test_one_plan_per_step_and_step_times_arrive_in_the_next_view():
    eng, spy, _, _ = make(SLOSchedulingPolicy)
    add(eng, "a")
    add(eng, "b")
    for i in range(4):
        eng.step()
        assert len(spy.calls) == i + 1
    views = [v for v, _ in spy.calls]
    assert views[0].last_step is None
    for i in range(1, 4):  # each view reports the step before it, once
        step = views[i].last_step
        assert step is not None and step is not views[i - 1].last_step
        assert step.num_requests == 2 and step.seconds > 0
    first = views[1].last_step
    assert {w.request_id for w in first.works} == {"a", "b"}
    assert first.num_prefill_tokens == 40


def test_a_failed_step_leaves_no_stale_state():
    eng, spy, executor, slo_policy = make(SLOSchedulingPolicy)
    add(eng, "a")
    add(eng, "b")
    for _ in range(3):
        eng.step()
    executor.fail_next = True
    with pytest.raises(StepFailed):
        eng.step()
    failed_view, failed_decision = spy.calls[-1]
    assert set(failed_decision.options) == {"a", "b"}
    add(eng, "c", n=1)  # a one-token prompt: it decodes in its first step
    eng.step()
    view, decision = spy.calls[-1]
    assert [v.id for v in view.requests] == ["c"]
    assert view.last_step is None  # the failed step is never reported as if it ran
    assert set(view.retired) == {"a", "b"}
    assert set(decision.order) == set(decision.options) == {"c"}
    assert not {"a", "b"} & set(slo_policy.acceptance.factors)
    while eng.has_unfinished():
        eng.step()
    assert len(spy.calls) == eng.num_steps + 1  # one plan per step, the failed one included


def test_first_come_plans_once_per_step_too():
    eng, spy, _, _ = make(lambda p, c: FirstComePolicy())
    add(eng, "a")
    add(eng, "b")
    out = []
    while eng.has_unfinished():
        out += eng.step()
    assert len(spy.calls) == eng.num_steps
    assert spy.calls[1][1].options["a"].mode == Mode.SPEC_QUADRATIC


class Forgetful(SchedulingPolicy):
    def plan(self, view: SchedulerView) -> BatchDecision:
        return BatchDecision((), {})


def test_a_decision_that_leaves_a_request_out_fails_loudly():
    eng, _, _, _ = make(lambda p, c: Forgetful())
    add(eng, "a")
    with pytest.raises(PolicyError, match="left requests"):
        eng.step()


def test_a_decision_without_a_mode_for_a_decoder_fails_loudly():
    class NoModes(SchedulingPolicy):
        def plan(self, view: SchedulerView) -> BatchDecision:
            return BatchDecision(tuple(v.id for v in view.requests), {})

    eng, _, _, _ = make(lambda p, c: NoModes())
    add(eng, "a")
    eng.step()  # the prefill needs no mode
    with pytest.raises(PolicyError, match="no mode"):
        eng.step()


def test_chunk_work_takes_kinds_by_name_and_refuses_unknown_ones():
    work = ChunkWork("r", "score", "score", Chunk.causal([1, 2]))
    assert work.kind is ChunkKind.SCORE
    with pytest.raises(ValueError):
        ChunkWork("r", "scores", "score", Chunk.causal([1, 2]))
