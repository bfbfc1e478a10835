from policies.option import AR1, Option
from policies.policy import PolicyConfig, SLOPolicy
from tests.policies.helpers import step_s, synthetic_profile, view


def test_feasible_request_is_admitted():
    p = SLOPolicy(synthetic_profile())
    assert p.admit(view("ok", ttft_ms=500.0, tpot_ms=50.0, num_output=0), now=0.05) is None


def test_infeasible_tpot_is_refused_with_a_reason():
    # The fastest option alone is ~5.6 ms per token (quadratic B=4): 2 ms cannot be met.
    p = SLOPolicy(synthetic_profile())
    refusal = p.admit(view("fast", tpot_ms=2.0, num_output=0, arrival_s=0.0), now=0.0)
    assert refusal is not None and refusal.status == 503
    assert "tpot_ms=2" in refusal.reason and "even alone" in refusal.reason


def test_a_tpot_only_speculation_meets_is_admitted_on_an_idle_device():
    # AR alone is 8.5 ms per token, quadratic B=3 alone ~5.4 ms: a 7 ms TPOT is what
    # speculation is for. An idle server must not refuse it as "overloaded".
    p = SLOPolicy(synthetic_profile())
    assert p.admit(view("quick", tpot_ms=7.0, num_output=0, arrival_s=0.0), now=0.0) is None
    # Beside 30 requests that cannot wait, no option makes 7 ms: refused now (429).
    busy = [view(f"r{i}", tpot_ms=12.0, max_tokens=40) for i in range(30)]
    r = p.admit(view("quick", tpot_ms=7.0, num_output=0, arrival_s=0.0), 0.0, busy)
    assert r is not None and r.status == 429 and "tpot_ms=7" in r.reason


def test_infeasible_ttft_and_deadline_are_refused():
    p = SLOPolicy(synthetic_profile())
    # Prefilling 1000 tokens alone takes ~208 ms.
    r = p.admit(view("long", ttft_ms=50.0, num_output=0, num_prompt=1000, arrival_s=0.0), 0.0)
    assert r is not None and r.status == 503 and "ttft_ms=50" in r.reason
    # 500 tokens at >= 5.6 ms each cannot finish in one second.
    r = p.admit(view("big", deadline_ms=1000.0, max_tokens=500, num_output=0, arrival_s=0.0),
                0.0)
    assert r is not None and r.status == 503 and "deadline_ms=1000" in r.reason


def test_best_effort_is_never_refused():
    p = SLOPolicy(synthetic_profile())
    v = view("be", tpot_ms=2.0, num_output=0, arrival_s=0.0, best_effort=True)
    assert p.admit(v, now=0.0) is None


def test_overload_refuses_with_429_when_the_queue_outlasts_its_ttft():
    p = SLOPolicy(synthetic_profile())
    queue = [view(f"q{i}", ttft_ms=200.0, num_output=0, num_prompt=1000, arrival_s=0.0)
             for i in range(8)]  # due before it, 8000 tokens of prefill ahead: ~1.6 s
    v = view("new", ttft_ms=300.0, num_output=0, arrival_s=0.1)
    refusal = p.admit(v, now=0.1, waiting=queue)
    assert refusal is not None and refusal.status == 429 and "overloaded" in refusal.reason
    assert p.admit(v, now=0.1) is None  # alone it is fine


def test_an_idle_engine_admits_what_its_pace_alone_meets_despite_stale_interference():
    # AR alone is 8.5 ms per token; 9 ms is met alone. The mean prefill interference
    # (1 ms) is an estimate no step updates while the engine idles: counted on an idle
    # engine, it refused every later arrival of a run (the seventh session's lockout).
    for config in (PolicyConfig(), PolicyConfig(fixed=AR1)):
        p = SLOPolicy(synthetic_profile(), config)
        p.interference_s = 1e-3
        v = view("new", tpot_ms=9.0, num_output=0, arrival_s=0.0)
        assert p.admit(v, now=0.0) is None, config.name
        # Beside a running request that cannot wait, the same estimate still refuses.
        firm = [view("r", tpot_ms=9.0, max_tokens=40, arrival_s=0.0)]
        r = p.admit(v, 0.0, firm)
        assert r is not None and r.status == 429 and "beside 1 running" in r.reason


def test_a_pace_alone_just_over_the_tpot_bound_is_not_infeasible():
    # The pace alone is priced at the mean acceptance; a newcomer's own is unknown and
    # prompts differ: within `alone_margin` of the bound it is admitted, past it refused.
    p = SLOPolicy(synthetic_profile())
    v = view("near", tpot_ms=1.0, num_output=0, arrival_s=0.0)
    best_ms = min(p.time_per_token(v, o, 1, 1) for o in p.options(v)) * 1e3
    margin = p.config.admission.alone_margin
    near = view("near", tpot_ms=best_ms / (1 + margin / 2), num_output=0, arrival_s=0.0)
    assert p.admit(near, now=0.0) is None
    far = view("far", tpot_ms=best_ms / (1 + 2 * margin), num_output=0, arrival_s=0.0)
    r = p.admit(far, now=0.0)
    assert r is not None and r.status == 503 and "even alone" in r.reason


def test_an_idle_engine_admits_a_trial_after_a_bad_patch_of_prompts():
    # Quadratic B=4 alone: ~5.6 ms a token at the profile's 2.2 tokens a forward. A bad
    # patch of prompts (1 a forward) pulls the estimate past the 6 ms bound's margin, and
    # a refused request brings no evidence: with every arrival refused, the estimate never
    # rose again and the run was over (CPU engine, tight: 185-199 of 200 refused).
    q4 = Option("spec_quadratic", 4)
    p = SLOPolicy(synthetic_profile(), PolicyConfig(fixed=q4))
    for i in range(5):
        p.observe_request(f"bad{i}", q4, 20, 20)
        p.finish(f"bad{i}")
    firm = [view("r", tpot_ms=6.0, max_tokens=40, arrival_s=0.0)]
    busy = p.admit(view("b", tpot_ms=6.0, num_output=0, arrival_s=0.0), 0.0, firm)
    assert busy is not None and busy.status == 503  # beside others: the estimate decides
    admitted = 0
    for i in range(10):  # later prompts accept well; each arrives to an idle engine
        if p.admit(view(f"good{i}", tpot_ms=6.0, num_output=0, arrival_s=0.0), 0.0) is None:
            admitted += 1
            p.observe_request(f"good{i}", q4, 20, 60)
            p.finish(f"good{i}")
    assert admitted == 10
    # Their evidence raised the estimate: beside others a newcomer is no longer infeasible
    # alone (at most shed for the load, 429).
    r = p.admit(view("c", tpot_ms=6.0, num_output=0, arrival_s=0.0), 0.0, firm)
    assert r is None or r.status == 429


def test_a_trial_is_judged_at_the_profile_acceptance_not_at_none():
    # The trial does not admit what the profile itself says cannot be met: AR alone is
    # 8.5 ms a token, and quadratic B=4 ~5.6 ms at the profile's acceptance.
    for config, tpot_ms in ((PolicyConfig(fixed=AR1), 6.0), (PolicyConfig(), 3.0)):
        p = SLOPolicy(synthetic_profile(), config)
        r = p.admit(view("x", tpot_ms=tpot_ms, num_output=0, arrival_s=0.0), 0.0)
        assert r is not None and r.status == 503, config.name


def test_an_idle_engine_admits_a_trial_after_a_patch_of_slow_steps():
    # Steps measured 1.5x the profile (another job on the machine) put quadratic B=4 alone
    # past a 6 ms bound's margin; on an idle engine no step runs to find that they are fast
    # again, so a newcomer there is a trial, judged on the profile.
    q4 = Option("spec_quadratic", 4)
    p = SLOPolicy(synthetic_profile(), PolicyConfig(fixed=q4))
    for _ in range(300):
        p.observe_step(20, 1, 1.5 * step_s(20, 1))
    firm = [view("r", tpot_ms=6.0, max_tokens=40, arrival_s=0.0)]
    busy = p.admit(view("b", tpot_ms=6.0, num_output=0, arrival_s=0.0), 0.0, firm)
    assert busy is not None and busy.status == 503
    assert p.admit(view("t", tpot_ms=6.0, num_output=0, arrival_s=0.0), 0.0) is None
