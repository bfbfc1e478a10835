"""policies/capacity.py with plain numbers: the load at which a replica starts to miss,
fitted from (load, SLO usage) samples before any miss is seen."""

from __future__ import annotations

import pytest

from policies.capacity import CapacityFit


def fed(points: list[tuple[float, float]], fit: CapacityFit | None = None,
        weight: float = 2.0) -> CapacityFit:
    fit = fit or CapacityFit()
    for load, used in points:
        fit = fit.observe(load, used, weight)
    return fit


def test_a_ramp_without_a_single_miss_predicts_where_misses_start() -> None:
    # usage = 0.2 + 0.05 x load: misses start at load 16; seen only up to load 8 (usage 0.6).
    fit = fed([(load, 0.2 + 0.05 * load) for load in range(1, 9)])
    base, slope = fit.line()
    assert base == pytest.approx(0.2) and slope == pytest.approx(0.05)
    assert fit.capacity() == pytest.approx(16.0)
    assert fit.capacity(0.6) == pytest.approx(8.0)


def test_one_load_only_goes_through_the_origin_the_safe_side() -> None:
    fit = fed([(8.0, 0.6)] * 4)
    assert fit.line() == (0.0, pytest.approx(0.075))
    assert fit.capacity() == pytest.approx(8 / 0.6)  # truth (base > 0) is higher


def test_nothing_is_said_too_early_or_without_a_rising_slope() -> None:
    assert fed([(4.0, 0.5)], weight=1.0).capacity() is None  # one request
    assert fed([(0.0, 0.3)] * 8).capacity() is None  # no load: no slope
    assert fed([(load, 0.9 - 0.05 * load) for load in range(1, 9)]).capacity() is None
    # A negative base (noise): pinned at the origin, the slope through the mean.
    assert fed([(load, 0.1 * load - 0.2) for load in range(3, 9)]).line()[0] == 0.0
    assert fed([(4.0, 0.0)] * 8).capacity() is None  # zero usage: slope 0


def test_memory_follows_a_replica_that_slows_down_in_time_not_requests() -> None:
    fast = fed([(load, 0.02 * load) for load in range(1, 17)])
    assert fast.capacity() == pytest.approx(50.0)
    slow = fed([(load, 0.1 * load) for load in range(1, 17)] * 8, fast)  # 128 s later
    assert slow.capacity() == pytest.approx(10.0, rel=0.05)
    # 500 requests in 0.1 s weigh 500, and the past loses only 0.1 s worth of its weight.
    busy = fast.observe(8.0, 0.16, weight=500.0, elapsed_s=0.1)
    assert busy.w == pytest.approx(fast.w * 0.5 ** (0.1 / 30) + 500)
    assert busy.capacity() == pytest.approx(50.0)


def test_capacity_is_at_least_one_request() -> None:
    assert fed([(load, 1.5 + 0.1 * load) for load in range(1, 9)]).capacity() == 1.0


@pytest.mark.parametrize("bad", [(-1.0, 0.5, 1.0), (1.0, float("nan"), 1.0), (1.0, 0.5, 0.0)])
def test_bad_samples_are_named(bad: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="observe"):
        CapacityFit().observe(*bad)
    with pytest.raises(ValueError, match="half_life_s"):
        CapacityFit(half_life_s=0)
