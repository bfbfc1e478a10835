"""engine/trace_executor.py: each step lasts what the step clock draws, on the SimClock and
as the step's elapsed time (the same helper times bench/slo_engine.py's ProfileTimed)."""

from __future__ import annotations

import pytest

from engine.plan import ChunkWork, StepPlan
from engine.trace_executor import SimClock, TraceExecutor
from models.batch import Chunk
from policies.step_clock import StepClock
from tests.policies.helpers import synthetic_profile


def test_each_step_passes_what_the_step_clock_draws() -> None:
    profile = synthetic_profile()
    clock = SimClock(5.0)
    executor = TraceExecutor(profile, StepClock(profile.cost, noise=0.2, seed=3), clock)
    plan = StepPlan([ChunkWork("r", "prefill", "prefill", Chunk.causal([5] * 7))])
    elapsed = [executor.step(plan).elapsed_s for _ in range(3)]
    same = StepClock(profile.cost, noise=0.2, seed=3)  # the same draws, step by step
    assert elapsed == [same.step_s(7, 1) for _ in range(3)]
    assert len(set(elapsed)) == 3  # noisy draws: not one mean repeated
    assert clock() == pytest.approx(5.0 + sum(elapsed))
