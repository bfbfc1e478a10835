from engine.simulator import SimConfig, Simulator
from policies.decision import SchedulerView
from policies.metrics import RequestResult, summarize
from policies.option import Option
from policies.policy import PolicyConfig, SLOPolicy
from policies.slo import SLO
from policies.workloads import capacity_rps, generate
from tests.policies.helpers import synthetic_profile


def run(policy_fixed=None, load=0.3, n=60, seed=0, **sim):
    profile = synthetic_profile()
    policy = SLOPolicy(profile, PolicyConfig(fixed=policy_fixed))
    rate = load * capacity_rps("mixed", policy.cost)
    specs = generate("mixed", rate, n, policy.cost, num_prompts=1, seed=seed)
    return Simulator(profile, policy, SimConfig(seed=seed, **sim)).run(specs), specs


def test_every_request_finishes_or_is_refused_with_a_reason():
    results, specs = run(load=0.9)
    assert len(results) == len(specs)
    for r, s in zip(results, specs, strict=True):
        if r.refused is None:
            assert r.finish_s is not None and r.num_output == s.max_tokens
            assert r.first_token_s is not None and r.arrival_s <= r.first_token_s <= r.finish_s
        else:
            assert r.status in (429, 503) and r.refused


def test_same_seed_same_results():
    a, _ = run(seed=3)
    b, _ = run(seed=3)
    assert [(r.first_token_s, r.finish_s) for r in a] == [(r.first_token_s, r.finish_s)
                                                           for r in b]


def test_a_small_kv_pool_preempts_and_still_finishes_everyone():
    results, _ = run(load=0.9, num_kv_blocks=24, block_size=16)
    assert all(r.finish_s is not None for r in results)


def test_speculation_makes_a_lone_request_faster_than_ar():
    auto, _ = run(load=0.01, n=5)
    ar, _ = run(Option("ar"), load=0.01, n=5)
    assert sum(r.finish_s - r.arrival_s for r in auto) < sum(r.finish_s - r.arrival_s
                                                              for r in ar)


def test_goodput_counts_requests_that_met_every_bound():
    slo = SLO(ttft_ms=100.0, tpot_ms=10.0)
    results = [RequestResult("good", "i", 0.0, slo, 11, 0.05, 0.15),
               RequestResult("slow", "i", 0.0, slo, 11, 0.05, 0.5),
               RequestResult("refused", "i", 1.0, slo, refused="no", status=503),
               RequestResult("late-first", "i", 0.0, slo, 11, 0.2, 0.3)]
    s = summarize(results)
    assert (s.num_requests, s.num_good, s.num_refused) == (4, 1, 1)
    assert s.attainment == 0.25
    assert s.goodput == 1 / 1.0  # one good request over 0 .. 1 s



def test_a_charged_plan_takes_its_cpu_time_off_the_clock():
    import time

    from engine.policy import FirstComePolicy
    from engine.simulator import ChargedPlan
    from engine.trace_executor import SimClock

    class Slow(FirstComePolicy):
        def plan(self, view):
            start = time.process_time()
            while time.process_time() - start < 0.002:  # 2 ms of CPU a step
                pass
            return super().plan(view)

    clock = SimClock(1.0)
    ChargedPlan(Slow(), clock).plan(SchedulerView((), (), 64, 8, 16))
    assert 1.002 <= clock.now < 1.5
    profile = synthetic_profile()
    spec = generate("interactive", 1.0, 1, SLOPolicy(profile).cost, num_prompts=1)
    plain = Simulator(profile, Slow(), SimConfig())
    charged = Simulator(profile, Slow(), SimConfig(charge_plan=True))
    (a,), (b,) = plain.run(spec), charged.run(spec)
    assert charged.num_steps == plain.num_steps  # the same steps, each 2 ms+ longer
    assert b.finish_s - a.finish_s >= 0.002 * plain.num_steps
