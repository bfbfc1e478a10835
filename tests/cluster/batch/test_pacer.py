"""The deadline as per-request SLOs, and the start-up estimate."""

from __future__ import annotations

import math

import pytest

from cluster.batch.pacer import Pacer, Workload, estimate, workload_of
from cluster.model_server import DEFAULT_PROFILE
from policies.option import AR1
from policies.profile import Profile


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_share_grows_when_ahead_and_shrinks_when_behind() -> None:
    clock = Clock()
    p = Pacer(100.0, num_requests=100, window=10, margin=1.0, clock=clock)
    assert p.deadline_ms(0) == pytest.approx(10_000)  # 100 s x 10 / 100
    clock.t += 50
    ahead, on_time = p.deadline_ms(80), p.deadline_ms(50)  # half the time gone
    assert ahead == pytest.approx(50_000 * 10 / 20)
    assert on_time == pytest.approx(50_000 * 10 / 50)
    # 30 requests (3 windows) behind the schedule: the share, and exp(-(3 - 1)) on top.
    assert p.behind(20) == pytest.approx(2.0) and not p.is_ahead(20)
    assert p.deadline_ms(20) == pytest.approx(50_000 * 10 / 80 * math.exp(-2))
    assert p.behind(45) == 0.0 and p.is_ahead(45)  # half a window behind: on schedule
    assert ahead > on_time == 10_000 > p.deadline_ms(20)
    assert p.deadline_ms(95) == pytest.approx(50_000)  # the rest fit in one window
    clock.t += 60  # past the deadline: the shortest SLO, still valid (best-effort)
    assert p.deadline_ms(99) == 1.0
    assert Pacer(None, 10, 4).deadline_ms(0) is None
    assert not Pacer(None, 10, 4).is_ahead(0)  # no deadline: auto as over HTTP
    assert p.projected_s(55) == pytest.approx(110 * 100 / 55)


def test_pacer_checks_itself() -> None:
    with pytest.raises(ValueError):
        Pacer(0.0, 10, 4)
    with pytest.raises(ValueError):
        Pacer(10.0, 10, 0)


def test_workload_and_estimate() -> None:
    w = workload_of([("completion", {"prompt": "abcdef", "max_tokens": 10, "n": 2}),
                     ("completion", {"prompt": [1, 2, 3]}),
                     ("chat", {"messages": [{"role": "user", "content": "abc"}]})], 50)
    assert w == Workload(3, 2 + 3 + 1, 20 + 16 + 50)
    est = estimate(Profile.load(DEFAULT_PROFILE), Workload(64, 640, 64 * 64), window=16)
    assert AR1 in est and all(s > 0 for s in est.values())
    # Twice the output takes longer; two replicas take about half as long.
    assert estimate(Profile.load(DEFAULT_PROFILE), Workload(64, 640, 2 * 64 * 64), 16)[AR1] \
        > est[AR1]
    assert estimate(Profile.load(DEFAULT_PROFILE), Workload(64, 640, 64 * 64), 16,
                    num_replicas=2)[AR1] < est[AR1]
