"""The simulator survives any arrival pattern: empty runs, one request, refusals at the end
on an idle engine, bursts, random workloads over random profiles (fixed seeds)."""

from __future__ import annotations

import random

import pytest

from engine.simulator import SimConfig, Simulator
from policies.option import TRACED, Option, candidates
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.slo import SLO
from policies.workloads import RequestSpec
from tests.policies.helpers import synthetic_profile

NO_SLO = SLO()


def spec(i: int, at: float, slo: SLO = NO_SLO, prompt: int = 20, out: int = 8) -> RequestSpec:
    return RequestSpec(f"r{i}", "interactive", at, prompt, out, slo, i)


def check(results, specs) -> None:  # noqa: ANN001
    assert [r.id for r in results] == [s.id for s in sorted(specs, key=lambda s: s.arrival_s)]
    by_id = {s.id: s for s in specs}
    for r in results:
        if r.refused is not None:
            assert r.status in (429, 503) and r.refused
        else:
            assert r.num_output == by_id[r.id].max_tokens
            assert r.arrival_s <= r.first_token_s <= r.finish_s


def test_an_empty_run_and_a_lone_request():
    profile = synthetic_profile()
    assert Simulator(profile, SLOPolicy(profile)).run([]) == []
    results = Simulator(profile, SLOPolicy(profile)).run([spec(0, 0.5)])
    check(results, [spec(0, 0.5)])
    assert results[0].finish_s > 0.5


def test_refusals_at_the_end_on_an_idle_engine():
    """The last arrivals are refused while nothing runs (this raised IndexError once)."""
    profile = synthetic_profile()
    hopeless = SLO(tpot_ms=0.01)  # no mode decodes a token in 10 us: refused (503)
    specs = [spec(0, 0.0), spec(1, 50.0, hopeless), spec(2, 60.0, hopeless)]
    results = Simulator(profile, SLOPolicy(profile)).run(specs)
    check(results, specs)
    assert [r.status for r in results] == [200, 503, 503]


def random_profile(rng: random.Random) -> Profile:
    a, b = rng.uniform(0.002, 0.03), rng.uniform(1e-5, 5e-4)
    c, d = rng.uniform(0.0, 5e-4), rng.uniform(0.0, 3e-3)
    shapes = [(1, 1), (4, 1), (12, 1), (8, 8), (32, 32), (64, 64), (128, 16), (512, 32)]
    cost = [(t, r, (a + b * t + c * r + (d if t > r else 0.0)) * rng.uniform(0.9, 1.1))
            for t, r in shapes]
    traces = {}
    for o in rng.sample(TRACED, rng.randint(0, len(TRACED))):  # some options untraced
        forwards = {"spec_linear": lambda: 2, "spec_quadratic": lambda: 1,
                    "diffusion": lambda b=o.block: rng.randint(2, b)}[o.mode]
        tokens = (lambda b=o.block: b) if o.mode == "diffusion" else (
            lambda b=o.block: rng.randint(1, b))
        traces[o] = [[(forwards(), tokens()) for _ in range(rng.randint(1, 6))]
                     for _ in range(rng.randint(1, 3))]
    return Profile(cost, traces)


def random_slo(rng: random.Random) -> SLO:
    def bound(lo: float, hi: float) -> float | None:
        return rng.choice([None, round(rng.uniform(lo, hi), 3)])
    return SLO(ttft_ms=bound(0.01, 2000.0), tpot_ms=bound(0.01, 100.0),
               deadline_ms=bound(1.0, 20_000.0), priority=rng.choice([0, 0, 1]),
               allow_lossy=rng.random() < 0.2, best_effort=rng.random() < 0.1)


def random_specs(rng: random.Random, n: int) -> list[RequestSpec]:
    pattern = rng.choice(["poisson", "burst", "same_time", "sparse"])
    t, out = 0.0, []
    for i in range(n):
        t += {"poisson": rng.expovariate(20.0), "burst": 0.0 if rng.random() < 0.8 else 1.0,
              "same_time": 0.0, "sparse": rng.uniform(1.0, 5.0)}[pattern]
        out.append(RequestSpec(f"q{i}", rng.choice(["interactive", "batch"]), t,
                               rng.randint(1, 200), rng.randint(1, 60), random_slo(rng),
                               rng.randrange(3)))
    return out


@pytest.mark.parametrize("seed", range(16))
def test_random_workloads_on_random_profiles(seed: int):
    rng = random.Random(seed)
    profile = random_profile(rng)
    fixed = rng.choice([None, None, *candidates(True), Option("spec_linear", 8)])
    config = PolicyConfig(fixed=fixed, slo_aware=rng.random() < 0.8)
    sim = SimConfig(max_batch_tokens=rng.choice([64, 256, 2048]),
                    max_num_seqs=rng.randint(1, 16), max_prefill_chunk=rng.choice([16, 64, 1024]),
                    num_kv_blocks=rng.randint(20, 60), block_size=16, seed=seed)
    specs = random_specs(rng, rng.randint(0, 40))
    check(Simulator(profile, SLOPolicy(profile, config), sim).run(specs), specs)
