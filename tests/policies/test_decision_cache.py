"""Decisions kept across steps (policies/decision_cache.py) against a full re-plan."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from engine.simulator import SimConfig, Simulator
from policies.decision_cache import CacheConfig
from policies.metrics import summarize
from policies.option import AR1, Option
from policies.policy import PolicyConfig, SLOPolicy
from policies.selector import ModeSelector
from policies.workloads import capacity_rps, generate
from tests.policies.helpers import synthetic_profile, view

FULL = PolicyConfig(cache=CacheConfig(enabled=False))


def batch(rng: random.Random, n: int) -> list:
    kinds = ({"tpot_ms": 15.0}, {"tpot_ms": 24.0}, {"deadline_ms": 60_000.0}, {})
    return [view(f"r{i}", max_tokens=rng.randint(20, 80), num_output=rng.randint(1, 10),
                 **rng.choice(kinds)) for i in range(n)]


def test_nothing_changed_nothing_is_rechosen():
    p = SLOPolicy(synthetic_profile())
    views = batch(random.Random(0), 24)
    first = p.decisions.select(views, now=0.0)
    assert p.decisions.num_full == 1
    again = p.decisions.select([replace(v, option=first[v.id]) for v in views], now=0.0)
    assert again == first
    assert (p.decisions.num_full, p.decisions.num_partial) == (1, 1)
    # Only the ones within step_band of missing are tried again; those left unmet are not:
    # nothing their rescue failed on moved (policies/rescue_memo.py).
    unmet = [k for k, e in p.decisions.kept.items() if not e.was_met and not e.is_lost]
    assert len(unmet) >= 2 and all(p.decisions.kept[k].chosen_at == 1 for k in unmet)
    assert p.decisions.num_rechosen - 24 <= 8


def test_a_steady_batch_gets_the_selectors_options_without_asking_it():
    """Nobody to choose for: the held options and the paces the selector would give, and
    the selector asked again as soon as a held request stops meeting its pace."""
    p = SLOPolicy(synthetic_profile())
    views = [view(f"r{i}", deadline_ms=60_000.0) for i in range(6)]
    views.append(view("pinned", tpot_ms=40.0))
    views[-1] = replace(views[-1], fixed=Option("spec_linear", 4))
    first = p.decisions.select(views, now=0.0)
    views = [replace(v, option=first[v.id]) for v in views]
    calls = []
    select = p.selector.select
    p.selector.select = lambda *a, **k: calls.append(1) or select(*a, **k)  # type: ignore
    again = p.decisions.select(views, now=0.0)
    assert again == first and not calls
    reference = ModeSelector(p.cost, p.acceptance, p.selector.config)
    assert reference.select(views, now=0.0, held=again) == again
    paces, expected = p.decisions.paces(), reference.paces()
    assert paces.keys() == expected.keys()
    assert all(paces[k] == pytest.approx(expected[k]) for k in paces)
    # Later, with the same options, r0 is due too soon to meet its pace: chosen for.
    views[0] = replace(views[0], slo=replace(views[0].slo, deadline_ms=500.0))
    p.decisions.kept["r0"].due = views[0].finish_deadline
    p.decisions.select(views, now=0.0)
    assert calls


def test_an_unmet_request_is_tried_again_as_soon_as_its_rescue_could_succeed():
    """Left unmet by a batch too slow for it, a request is chosen for again when the
    batch's step shrinks (here: half the batch left), and at every step with the memo off."""
    p = SLOPolicy(synthetic_profile())
    views = batch(random.Random(0), 24)
    first = p.decisions.select(views, now=0.0)
    views = [replace(v, option=first[v.id]) for v in views]
    unmet = [k for k, e in p.decisions.kept.items() if not e.was_met and not e.is_lost]
    assert unmet and all(p.decisions.kept[k].failed_at is not None for k in unmet)
    p.decisions.select(views, now=0.0)
    assert all(p.decisions.kept[k].chosen_at == 1 for k in unmet)
    rest = [v for i, v in enumerate(views) if v.id in unmet or i % 2]
    p.decisions.select(rest, now=0.0)
    assert all(p.decisions.kept[k].chosen_at == 3 for k in unmet)
    always = SLOPolicy(synthetic_profile(), PolicyConfig(cache=CacheConfig(fail_band=0.0)))
    always.decisions.select(views, now=0.0)
    always.decisions.select(views, now=0.0)
    assert all(always.decisions.kept[k].chosen_at == 2 for k in unmet)


def test_a_new_request_alone_is_chosen_for_and_the_rest_kept():
    p = SLOPolicy(synthetic_profile())
    views = [view(f"r{i}", deadline_ms=60_000.0) for i in range(20)]
    first = p.decisions.select(views, now=0.0)
    views = [replace(v, option=first[v.id]) for v in views]
    views.append(view("hot", tpot_ms=15.0, max_tokens=40))
    choice = p.decisions.select(views, now=0.0)
    full = SLOPolicy(synthetic_profile(), FULL).selector.select(views, now=0.0)
    assert choice == full  # test_selector's case: hot gets linear B=8, the rest AR
    assert p.decisions.num_rechosen == 21


def test_a_request_falling_behind_is_rechosen():
    p = SLOPolicy(synthetic_profile())
    views = [view(f"r{i}", deadline_ms=60_000.0) for i in range(8)]
    views.append(view("late", tpot_ms=40.0, max_tokens=40))
    first = p.decisions.select(views, now=0.0)
    assert first["late"] == AR1
    # Due at 1.53 s; 1.2 s later it has emitted nothing more: it needs 8.5 ms per token
    # now (39 ms at first), under AR's 12.5 ms steps.
    views = [replace(v, option=first[v.id]) for v in views]
    p.decisions.select(views, now=1.2)
    assert p.decisions.kept["late"].chosen_at == p.decisions.num_selects


def test_a_moved_cost_fit_replans_everyone():
    p = SLOPolicy(synthetic_profile())
    views = [replace(v, option=AR1) for v in batch(random.Random(1), 16)]
    p.decisions.select(views, now=0.0)
    for i in range(200):  # the machine got twice as slow
        tokens, n = ((1, 1), (8, 1), (16, 16), (40, 8), (64, 32))[i % 5]
        p.observe_step(tokens, n, 2 * p.cost.prior_coef.predict(tokens, n))
    assert p.cost.predict(16, 16) > 1.5 * p.cost.prior_coef.predict(16, 16)
    p.decisions.select(views, now=0.0)
    assert p.decisions.num_full == 2


def test_kept_decisions_stay_met_along_random_evolving_batches():
    """Every step of random evolving batches: the cached choice meets every request that
    a full re-plan of the same state meets, but for at most a few (kept options are not
    re-chosen to make room), and never predicts a request met that is not."""
    rng = random.Random(7)
    cached = SLOPolicy(synthetic_profile())
    reference = ModeSelector(cached.cost, cached.acceptance, cached.selector.config)
    views, now, next_id, worse = batch(rng, 32), 0.0, 32, 0
    for _ in range(150):
        choice = cached.decisions.select(views, now)
        reference.interference_s = cached.selector.interference_s
        fresh = reference.select(views, now)
        met, met_full = ({k for k, (_, _, m) in paces.items() if m}
                         for paces in (cached.decisions.paces(), reference.paces()))
        worse += len(met_full - met)
        tokens = sum(choice[v.id].work_tokens for v in views)
        step = cached.cost.predict(tokens, len(views))
        for v in views:  # predicted met means the step over its rate is within its need
            if v.id in met:
                rate = cached.acceptance.tokens_per_forward(choice[v.id], v.id)
                assert step / rate <= v.needed_time_per_token(now) * 1.0001
        assert set(fresh) == set(choice)
        cached.observe_step(tokens, len(views), step * rng.uniform(0.97, 1.03))
        now += step
        out = []
        for v in views:
            emitted = max(1, round(cached.acceptance.tokens_per_forward(choice[v.id], v.id)
                                   * rng.uniform(0.6, 1.4)))
            cached.observe_request(v.id, choice[v.id], 1, emitted)
            if v.num_output + emitted >= v.max_tokens:
                cached.finish(v.id)
                out.append(view(f"r{next_id}", now, max_tokens=rng.randint(20, 80),
                                **rng.choice(({"tpot_ms": 15.0}, {"deadline_ms": 9e4}))))
                next_id += 1
            else:
                out.append(replace(v, num_output=v.num_output + emitted, option=choice[v.id]))
        views = out
    assert cached.decisions.num_partial > 50  # the cache did keep decisions
    assert worse <= 0.02 * 150 * 32  # met by the full re-plan but not the cached one


def simulate(config: PolicyConfig, load: float, seed: int) -> tuple[float, float]:
    profile = synthetic_profile()
    policy = SLOPolicy(profile, config)
    rate = load * capacity_rps("mixed", policy.cost)
    specs = generate("mixed", rate, 80, policy.cost, num_prompts=1, seed=seed)
    s = summarize(Simulator(profile, policy, SimConfig(seed=seed)).run(specs))
    return s.attainment, s.goodput


@pytest.mark.parametrize("load", [0.5, 0.9])
def test_same_slo_outcome_in_the_simulator_as_a_full_replan(load: float):
    kept = [simulate(PolicyConfig(), load, seed) for seed in range(2)]
    full = [simulate(FULL, load, seed) for seed in range(2)]
    for (a, g), (fa, fg) in zip(kept, full, strict=True):
        assert a >= fa - 0.03 and g >= 0.95 * fg


@pytest.mark.parametrize("field", ["need_band", "tpf_band", "step_band", "max_dirty_share",
                                   "fail_band"])
def test_bad_cache_config_names_the_field(field: str):
    with pytest.raises(ValueError, match=field):
        CacheConfig(**{field: 1.5})


def test_kept_options_over_a_smaller_token_budget_are_replanned():
    p = SLOPolicy(synthetic_profile())
    views = [view("a"), view("b")]  # an idle device: spare compute buys them speculation
    first = p.decisions.select(views, now=0.0)
    assert sum(o.work_tokens for o in first.values()) > len(views)
    views = [replace(v, option=first[v.id]) for v in views]
    choice = p.decisions.select(views, now=0.0, max_tokens=len(views))
    assert p.decisions.num_full == 2
    assert sum(o.work_tokens for o in choice.values()) <= len(views)


def test_a_batch_that_shrank_rechooses_for_its_spare_compute():
    """A request kept at AR in a full batch gets what a full re-plan gives it once most of
    the batch is gone: spare compute buys speculation (H200 tight medium, seed 1, lost
    0.1 attainment to a lost request kept at AR beside one other)."""
    p = SLOPolicy(synthetic_profile())
    views = [view(f"r{i}", deadline_ms=60_000.0) for i in range(40)]
    first = p.decisions.select(views, now=0.0)
    assert first["r0"] == AR1
    views = [replace(v, option=first[v.id]) for v in views[:2]]
    choice = p.decisions.select(views, now=0.0)
    full = SLOPolicy(synthetic_profile(), FULL).selector.select(views, now=0.0)
    assert full["r0"] != AR1 and choice == full


def test_speculation_only_requests_are_chosen_for_together():
    """A new request that needs speculation (TPOT below AR alone) makes every kept one that
    does too be chosen for again: the selector's search for the most met is joint."""
    p = SLOPolicy(synthetic_profile())
    ar_ms = p.cost.predict(1, 1) * 1e3
    # Ahead of their pace (half their tokens out): met, so kept.
    tight = {"tpot_ms": 0.99 * ar_ms, "max_tokens": 60, "num_output": 30}
    views = [view(f"t{i}", **tight) for i in range(3)]
    views += [view(f"s{i}", deadline_ms=60_000.0) for i in range(6)]
    first = p.decisions.select(views, now=0.0)
    views = [replace(v, option=first[v.id]) for v in views]
    rechosen = p.decisions.num_rechosen
    p.decisions.select(views + [view("t9", **tight)], now=0.0)
    assert {"t0", "t1", "t2"} <= {k for k, e in p.decisions.kept.items()
                                  if e.chosen_at == p.decisions.num_selects}
    assert p.decisions.num_rechosen - rechosen < len(views) + 1  # not a full re-plan
