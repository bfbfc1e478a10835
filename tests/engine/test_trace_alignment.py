"""engine/trace_executor.py with `align`: speculative acceptance by output position, so a
request that switches modes mid-way accepts as its trace did at that position."""

from engine.simulator import SimConfig, Simulator
from engine.trace_executor import TraceExecutor
from policies.option import LINEAR, Option
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.step_clock import StepClock
from policies.workloads import capacity_rps, generate
from tests.policies.helpers import synthetic_profile

LINEAR8 = Option(LINEAR, 8)


def test_an_iteration_is_read_at_the_requests_output_offset():
    profile = Profile(synthetic_profile().cost, {LINEAR8: [[(2, 3), (2, 1), (2, 5)]]})
    executor = TraceExecutor(profile, StepClock(profile.cost, 0.0), align=True)
    executor.bind("r", 0, num_prompt=10)
    # iterations start at output offsets 0, 3, 4 (the trace has 9 tokens, then wraps)
    at = {offset: executor._iteration_at("r", LINEAR8, 10 + offset) for offset in range(10)}
    assert at[0] == (2, 3) and at[3] == (2, 1) and at[4] == (2, 5) and at[9] == (2, 3)
    assert at[2] == (2, 1) and at[6] == (2, 3)  # mid-iteration: to that iteration's end


QUAD3 = Option("spec_quadratic", 3)
# Per-iteration traces of three prompts, as calibration records them (tokens <= block)
TRACES = {LINEAR8: [[(2, 1 + (i * k) % 8) for i in range(40)] for k in (3, 5, 7)],
          QUAD3: [[(1, 1 + (i * k) % 3) for i in range(60)] for k in (1, 2, 4)]}


def _run(fixed: Option | None, align: bool):  # noqa: ANN202
    profile = Profile(synthetic_profile().cost, TRACES)
    policy = SLOPolicy(profile, PolicyConfig(fixed=fixed))
    specs = generate("mixed", 0.3 * capacity_rps("mixed", policy.cost), 40, policy.cost,
                     num_prompts=profile.num_prompts(), seed=1)
    results = Simulator(profile, policy, SimConfig(seed=1, align_traces=align)).run(specs)
    return [(r.first_token_s, r.finish_s, r.refused) for r in results]


def test_a_fixed_mode_reads_the_same_iterations_either_way():
    # in one mode every iteration starts where the previous one ended: the offsets are the
    # trace's own iteration starts, so alignment changes nothing
    for fixed in (LINEAR8, QUAD3):
        assert _run(fixed, align=True) == _run(fixed, align=False)
    assert _run(None, align=True) != _run(None, align=False)  # auto switches modes
