"""The simulator decides as the engine does: one workload through engine/simulator.py and
through an LLMEngine driven the way a server drives it, with a fake executor written here
(its own replay of the same traces), gives the same plan at every step and the same
timings per request."""

from __future__ import annotations

from engine.engine import LLMEngine
from engine.params import DecodeParams, Mode, SamplingParams
from engine.plan import StepOutput, StepPlan, WorkResult
from engine.policy import AdmissionError
from engine.simulator import SimConfig, Simulator, plan_record
from engine.slo_policy import SLOSchedulingPolicy
from engine.trace_executor import SIM_MODEL, SimClock
from policies.option import Option
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.step_clock import StepClock
from policies.workloads import capacity_rps, generate
from tests.policies.helpers import synthetic_profile


class FakeExecutor:
    """Accepts, per request and option, what the profile's trace of prompt 0 says, in order;
    steps last what StepClock says (same seed as the simulator's)."""

    def __init__(self, profile: Profile, clock: SimClock, seed: int) -> None:
        self.profile, self.clock = profile, clock
        self.step_clock = StepClock(profile.cost, None, seed)
        self.used: dict[tuple[str, Option], int] = {}
        self.plans: list = []

    def step(self, plan: StepPlan) -> StepOutput:
        results = []
        for w in plan.works:
            n = len(w.sample_rows)
            accepted = 0
            if w.verify_drafts:
                option = Option(w.mode, len(w.verify_drafts) + 1)
                trace = self.profile.traces[option][0]
                k = self.used.get((w.request_id, option), 0)
                self.used[(w.request_id, option)] = k + 1
                accepted = min(trace[k % len(trace)][1] - 1, len(w.verify_drafts))
            results.append(WorkResult([7] * n, [1.0] * n, accepted))
        seconds = self.step_clock.step_s(plan.num_tokens, len(plan.works))
        self.clock.now += seconds
        self.plans.append(plan_record(plan))
        return StepOutput(results, seconds)

    def shutdown(self) -> None:
        pass


def engine_run(profile: Profile, specs, seed: int):  # noqa: ANN001, ANN201
    clock = SimClock()
    executor = FakeExecutor(profile, clock, seed)
    policy = SLOSchedulingPolicy(SLOPolicy(profile), clock)
    eng = LLMEngine(executor, SIM_MODEL, None, SimConfig().engine_config(), policy, clock)
    arrivals = sorted(specs, key=lambda s: s.arrival_s)
    times, k = {}, 0
    while k < len(arrivals) or eng.has_unfinished():
        while k < len(arrivals) and arrivals[k].arrival_s <= clock.now:
            s = arrivals[k]
            try:
                eng.add_request([1000 + 10_000 * k + j for j in range(s.num_prompt)],
                                SamplingParams(max_tokens=s.max_tokens, ignore_eos=True),
                                DecodeParams(mode=Mode.AUTO), s.id, s.slo.priority, s.slo,
                                s.arrival_s)
            except AdmissionError:
                times[s.id] = None
            k += 1
        if not eng.has_unfinished():
            clock.now = arrivals[k].arrival_s
            continue
        for out in eng.step():
            if out.finished:
                times[out.request_id] = clock.now
    return executor.plans, times


def test_simulator_and_engine_make_the_same_decisions_step_by_step():
    profile = synthetic_profile()
    cost = SLOPolicy(profile).cost
    specs = generate("mixed", 0.6 * capacity_rps("mixed", cost), 40, cost, num_prompts=1,
                     seed=4)
    sim = Simulator(profile, SLOPolicy(profile), SimConfig(seed=4, record_plans=True))
    results = sim.run(specs)
    plans, times = engine_run(profile, specs, seed=4)
    assert len(sim.plans) == len(plans) > 100
    for i, (a, b) in enumerate(zip(sim.plans, plans, strict=True)):
        assert a == b, f"step {i} differs"
    kinds = {mode for plan in plans for _, _, mode, _ in plan}
    assert "ar" in kinds and kinds & {"spec_linear", "spec_quadratic"}  # auto switched modes
    assert {r.id: r.finish_s if r.refused is None else None for r in results} == times
