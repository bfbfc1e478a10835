"""bench/slo_engine.py ProfileTimed: the real engine and model with every step timed by the
profile's step clock (`--clock profile`), so that an engine check does not depend on how
busy this machine is."""

from __future__ import annotations

import pytest

from bench.slo_engine import EngineBench, ScaledCost, kept_into
from bench.slo_engine_cells import ENGINE_PROFILE, StepPoints, cell_specs, engine_policy_config
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.step_clock import StepClock


@pytest.fixture(scope="module")
def bench() -> EngineBench:
    return EngineBench()


def _run(bench: EngineBench, profile: Profile, name: str, seed: int = 0):  # noqa: ANN202
    specs = cell_specs("tight", "medium", seed, 10, ScaledCost(SLOPolicy(profile).cost, 1.0),
                       len(bench.prompts))
    kept: list[StepPoints] = []
    results = bench.run(specs, profile, engine_policy_config(name),
                        kept_into(kept, StepPoints), StepClock(profile.cost, seed=seed))
    return results, kept[-1].points


def test_every_step_lasts_what_the_profiles_step_clock_draws(bench: EngineBench) -> None:
    profile = Profile.load(ENGINE_PROFILE)
    results, points = _run(bench, profile, "spec_linear")
    assert len(points) > 20 and any(r.refused is None for r in results)
    clock = StepClock(profile.cost, seed=0)  # the same draws, step by step
    assert [s for _, _, s in points] == pytest.approx([clock.step_s(t, r) for t, r, _ in points])


def test_a_profile_clock_run_repeats_exactly(bench: EngineBench) -> None:
    """auto's decisions read the clock (paces, deadlines): on the profile's clock they are
    the same every run, whatever the machine's load."""
    profile = Profile.load(ENGINE_PROFILE)
    first, _ = _run(bench, profile, "auto", seed=1)
    again, _ = _run(bench, profile, "auto", seed=1)
    assert [(r.refused, r.first_token_s, r.finish_s) for r in first] == [
        (r.refused, r.first_token_s, r.finish_s) for r in again]
    assert any(r.finish_s is not None and r.refused is None for r in first)
