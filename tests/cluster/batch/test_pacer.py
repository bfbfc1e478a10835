"""The deadline as per-request SLOs, steered by the job's measured progress; the start-up
estimate."""

from __future__ import annotations

import pytest

from cluster.batch.estimate import Workload, estimate, fastest_option, planned_tokens, workload_of
from cluster.batch.pacer import Pacer, PacerConfig
from cluster.model_server import DEFAULT_PROFILE
from policies.option import AR1, Option
from policies.profile import Profile

EXACT = PacerConfig(margin=1.0)
FAST = Option("spec_linear", 4)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def run(p: Pacer, clock: Clock, tokens_per_s: float, seconds: int) -> None:
    """Tokens stream back at this rate, reported every 0.5 s."""
    for i in range(2 * seconds):
        clock.t += 0.5
        p.produced(int(tokens_per_s * (i + 1) / 2) - int(tokens_per_s * i / 2))


def test_ahead_ar_behind_fast_and_back() -> None:
    clock = Clock()
    p = Pacer(100.0, num_tokens=1000, window=10, choose=lambda _: FAST, config=EXACT, clock=clock)
    assert p.option() == AR1 and p.deadline_ms(10) == pytest.approx(10_000)  # 100 s x 100/1000
    run(p, clock, 12, 10)  # 10 tokens/s would do
    assert p.option() == AR1 and p.pressure() < 1
    assert p.deadline_ms(10) == pytest.approx(90_000 * 100 / 880)  # its share of the rest
    run(p, clock, 4, 10)  # the machine slows: behind
    assert p.pressure() > 2 and p.option() == FAST
    projected = p.projected_s()
    assert projected is not None and projected > 100  # at 4 tokens/s it would be late
    run(p, clock, 40, 8)  # the faster mode bought speed: ahead again, AR
    assert p.pressure() < 0.95 and p.option() == AR1
    assert p.num_switches == 2


def test_the_fast_option_is_chosen_from_ar_as_measured() -> None:
    clock, seen = Clock(), []

    def choose(ar_s_per_token: float | None) -> Option:
        seen.append(ar_s_per_token)
        return FAST

    p = Pacer(100.0, 1000, 10, choose=choose, config=EXACT, clock=clock)
    run(p, clock, 20, 6)
    assert p.option() == AR1
    assert p.ar_s_per_token == pytest.approx(0.5)  # 10 in flight at 20 tokens a second
    run(p, clock, 4, 6)  # behind: chosen with AR's time per token as last measured
    assert p.option() == FAST and seen == [None, pytest.approx(10 / 4)]


def test_a_fast_option_no_faster_than_ar_is_dropped() -> None:
    def behind_then(fast_tokens_per_s: int) -> Pacer:
        clock = Clock()
        p = Pacer(100.0, 1000, 10, choose=lambda _: FAST, config=EXACT, clock=clock)
        for rate, seconds in ((12, 8), (5, 6), (fast_tokens_per_s, 12)):
            for _ in range(seconds):  # AR at 12 tokens/s, 5 when the machine slows, ...
                run(p, clock, rate, 1)
                p.option()
        return p

    # AR as last measured before the job fell behind: 10 in flight at 9.2 tokens/s.
    pays = behind_then(10)  # the fast option: 1.0 s a token, under 0.95 x AR's 1.09
    assert pays.ar_s_per_token == pytest.approx(10 / 9.2)
    assert pays.is_behind and pays.fast_pays is True and pays.option() == FAST
    slow = behind_then(8)  # no faster: AR for the rest, though still behind
    assert slow.is_behind and slow.fast_pays is False and slow.option() == AR1


def test_hysteresis_and_the_start() -> None:
    clock = Clock()
    # The start-up estimate says AR is late: behind (the fast option) from the start.
    p = Pacer(60.0, 600, 4, estimate_s=80.0, choose=lambda _: FAST, config=EXACT, clock=clock)
    assert p.pressure() == pytest.approx(80 / 60) and p.option() == FAST
    run(p, clock, 10, 6)  # exactly on pace (10 tokens/s): still behind until 0.95
    assert p.option() == FAST
    run(p, clock, 14, 6)
    assert p.option() == AR1
    clock.t += 100  # past the deadline: the shortest SLO, still valid (best-effort)
    assert p.deadline_ms(20) == 1.0 and p.option() == FAST
    assert Pacer(60.0, 600, 4, estimate_s=80.0).option() is None  # no fast option: auto
    no_deadline = Pacer(None, 100, 4, choose=lambda _: FAST)
    assert no_deadline.deadline_ms(10) is None and no_deadline.option() is None  # auto


def test_finished_requests_settle_the_plan() -> None:
    clock = Clock()
    p = Pacer(100.0, 100, 4, config=EXACT, clock=clock)
    p.produced(5)
    p.settle(planned=20, made=8, streamed=5)  # EOS at 8: 12 fewer to make, 3 not yet seen
    assert (p.num_done, p.num_tokens) == (8, 88)
    p.settle(planned=30, made=0, streamed=0)  # refused
    assert p.num_tokens == 58


def test_pacer_checks_itself() -> None:
    with pytest.raises(ValueError):
        Pacer(0.0, 10, 4)
    with pytest.raises(ValueError):
        Pacer(10.0, 10, 0)
    with pytest.raises(ValueError):
        PacerConfig(margin=0)


def test_workload_and_estimate() -> None:
    w = workload_of([("completion", {"prompt": "abcdef", "max_tokens": 10, "n": 2}),
                     ("completion", {"prompt": [1, 2, 3]}),
                     ("chat", {"messages": [{"role": "user", "content": "abc"}]})], 50)
    assert w == Workload(3, 2 + 3 + 1, 20 + 16 + 50)
    assert planned_tokens("chat", {"max_completion_tokens": 7, "n": 3}, 50) == 21
    profile = Profile.load(DEFAULT_PROFILE)
    est = estimate(profile, Workload(64, 640, 64 * 64), window=16)
    assert AR1 in est and all(s > 0 for s in est.values())
    # Twice the output takes longer; two replicas take about half as long.
    assert estimate(profile, Workload(64, 640, 2 * 64 * 64), 16)[AR1] > est[AR1]
    assert estimate(profile, Workload(64, 640, 64 * 64), 16, num_replicas=2)[AR1] < est[AR1]
    # Speculation pays at small batches on the CPU profile, and stops paying at large ones.
    assert fastest_option(profile, 4) != AR1 and fastest_option(profile, 64) == AR1
    # AR measured 3x its predicted step: the per-forward overhead favours quadratic (one
    # forward per iteration) over linear (two).
    assert fastest_option(profile, 4, 0.035).mode == "spec_quadratic"
