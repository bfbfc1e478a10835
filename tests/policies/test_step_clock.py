"""policies/step_clock.py's drift: off by default (the clock draws what it drew before), and
when on a slow wander whose spread and step-to-step correlation are what was asked."""

from __future__ import annotations

import math
import statistics

import pytest

from policies.step_clock import StepClock

PROFILE = [(1, 1, 0.006), (8, 8, 0.012), (32, 32, 0.036), (4, 4, 0.009)]


def _logs(clock: StepClock, n: int) -> list[float]:
    return [math.log(clock.step_s(8, 8) / clock.mean_s(8, 8)) for _ in range(n)]


def test_no_drift_draws_the_same_steps_as_before():
    plain, off = StepClock(PROFILE, 0.1, seed=3), StepClock(PROFILE, 0.1, seed=3, drift=0.0)
    assert [plain.step_s(8, 8) for _ in range(50)] == [off.step_s(8, 8) for _ in range(50)]


def test_drift_wanders_slowly_with_the_spread_asked_for():
    xs = _logs(StepClock(PROFILE, 0.0, seed=1, drift=0.15, drift_rho=0.99), 40000)
    assert statistics.pstdev(xs) == pytest.approx(0.15, rel=0.15)
    lag1 = statistics.correlation(xs[:-1], xs[1:])
    assert lag1 == pytest.approx(0.99, abs=0.005)
    # What per-step noise of the same spread is not: the mean over 100 steps still moves.
    means = [statistics.fmean(xs[i:i + 100]) for i in range(0, 40000, 100)]
    assert statistics.pstdev(means) > 0.08


def test_drift_is_seeded_and_checked():
    a, b = StepClock(PROFILE, 0.1, seed=5, drift=0.2), StepClock(PROFILE, 0.1, seed=5, drift=0.2)
    assert [a.step_s(4, 4) for _ in range(20)] == [b.step_s(4, 4) for _ in range(20)]
    with pytest.raises(ValueError, match="drift"):
        StepClock(PROFILE, drift=0.1, drift_rho=1.0)
