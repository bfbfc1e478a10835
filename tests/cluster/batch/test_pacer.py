"""The deadline as per-request SLOs, steered by the job's measured progress; the start-up
estimate."""

from __future__ import annotations

import pytest

from cluster.batch.estimate import (
    Workload,
    estimate,
    fastest_option,
    ladder,
    planned_tokens,
    workload_of,
)
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


def drive(p: Pacer, clock: Clock, plant, seconds: float) -> float | None:
    """The job against a plant (the pacer's state -> tokens/s), steered every 0.5 s: when it
    made all its tokens (seconds from the start), None if not within `seconds`."""
    made = 0.0
    for _ in range(int(2 * seconds)):
        clock.t += 0.5
        made += plant(p) / 2
        p.produced(int(made) - (p.num_done))
        p.steer()
        if p.num_done >= p.num_tokens:
            return p.elapsed()
    return None


def ar_then_fast(per_request: float, fast_gain: float):
    """Tokens/s: `per_request` per request in flight, x fast_gain while speculating."""
    return lambda p: per_request * p.window * (fast_gain if p.is_speeding else 1.0)


def test_behind_raises_the_window_first() -> None:
    clock = Clock()
    # Needs 10 tokens/s; 4 in flight make 6, 8 make 12: the window is what it needs.
    p = Pacer(100.0, 1000, window=4, choose=lambda _: FAST, config=EXACT, clock=clock,
              max_window=16)
    assert p.window == 4 and p.option() == AR1
    assert drive(p, clock, ar_then_fast(1.5, 2.0), 100) < 100
    assert p.max_window_used == 8 and p.option() == AR1 and not p.is_speeding
    assert p.moves[0] == "5.5 s: 8 in flight"  # one move a horizon (5 s) after the first tokens
    assert not any("spec" in m for m in p.moves)  # (near the end, well ahead: back to 4)


def test_at_the_cap_behind_speculation_and_back_when_ahead() -> None:
    clock = Clock()
    # Capped at 2 in flight (6 tokens/s) and 10 needed: only the fast option (x2) makes it.
    p = Pacer(100.0, 1000, window=2, choose=lambda _: FAST, config=EXACT, clock=clock)
    assert drive(p, clock, ar_then_fast(3.0, 2.0), 100) < 100
    assert p.fast_pays is True and p.window == 2
    assert p.ar_s_per_token == pytest.approx(2 / 6)  # AR at the cap over a full horizon
    assert p.moves[0] == "5.5 s: spec_linear/4"  # then AR when ahead, and back, by pressure
    # Room to grow: the window goes first (4, 8), speculation only at the cap.
    clock = Clock()
    q = Pacer(100.0, 1000, window=2, choose=lambda _: FAST, config=EXACT, clock=clock,
              max_window=8)
    assert drive(q, clock, ar_then_fast(0.6, 3.0), 100) < 100
    assert q.moves[:3] == ["6.0 s: 4 in flight", "11.0 s: 8 in flight",
                           "16.0 s: spec_linear/4"]


def test_a_fast_option_no_faster_than_ar_is_dropped() -> None:
    clock = Clock()
    ends: list[tuple[float | None, float | None]] = []  # (best_s, late_s) per projection

    class Seen(Pacer):
        def _check(self, rate: float, gain: float) -> None:
            super()._check(rate, gain)
            ends.append((self.best_s, self.late_s))

    # The profile says the fast option doubles the speed: on pace after the first horizon;
    # measured no faster, the second projection is late.
    p = Seen(100.0, 1000, window=2, choose=lambda _: FAST, config=EXACT, clock=clock,
             gain=lambda w: 2.0)
    assert drive(p, clock, ar_then_fast(3.0, 1.0), 100) is None  # late: nothing buys speed
    assert len(ends) == 2 and ends[0][1] is None and ends[1][1] is not None
    assert ends[0][0] < 100 < ends[1][0] and p.num_checks == 2
    assert p.fast_pays is False and p.option() == AR1 and p.is_behind
    assert p.moves == ["5.5 s: spec_linear/4", "10.5 s: AR (no faster than AR)"]


def test_well_ahead_lowers_the_window_to_the_base() -> None:
    clock = Clock()
    # The estimate started it at 16 in flight; 10 tokens/s are needed, 16 make 48.
    p = Pacer(100.0, 1000, window=2, choose=lambda _: FAST, config=EXACT, clock=clock,
              max_window=16, start_window=16)
    assert drive(p, clock, ar_then_fast(3.0, 2.0), 100) < 100
    assert p.moves[:3] == ["0.0 s: 16 in flight (estimate)", "5.5 s: 8 in flight",
                           "10.5 s: 4 in flight"]  # halved per horizon
    assert not any("spec" in m for m in p.moves)


def test_the_fast_option_is_chosen_from_ar_as_measured_at_the_cap() -> None:
    clock, seen = Clock(), []

    def choose(ar_s_per_token: float | None) -> Option:
        seen.append(ar_s_per_token)
        return FAST

    p = Pacer(100.0, 1000, 10, choose=choose, config=EXACT, clock=clock)
    drive(p, clock, ar_then_fast(0.5, 1.0), 6)
    assert p.option() == FAST and seen == [None, pytest.approx(10 / 5)]


def test_the_start() -> None:
    clock = Clock()
    # The start-up estimate says AR is late at the cap: behind, but AR for a first horizon
    # (the reference the fast option must beat), then the fast option.
    p = Pacer(60.0, 600, 4, estimate_s=80.0, choose=lambda _: FAST, config=EXACT, clock=clock)
    assert p.pressure() == pytest.approx(80 / 60) and p.is_behind and p.option() == AR1
    p.steer()
    assert p.option() == AR1 and p.moves == []
    drive(p, clock, ar_then_fast(2.0, 2.0), 3.5)  # 8 tokens/s at AR, 10 needed
    assert p.option() == FAST and p.moves == ["3.5 s: spec_linear/4"]  # horizon 3 s
    assert p.ar_s_per_token == pytest.approx(4 / 8)
    clock.t += 100  # past the deadline: the shortest SLO, still valid (best-effort)
    assert p.deadline_ms(20) == 1.0
    clock = Clock()
    q = Pacer(60.0, 600, 4, estimate_s=80.0, clock=clock)  # no fast option: auto
    drive(q, clock, ar_then_fast(2.0, 2.0), 10)
    assert q.is_speeding and q.option() is None
    no_deadline = Pacer(None, 100, 4, choose=lambda _: FAST, max_window=8)
    no_deadline.steer()
    assert no_deadline.deadline_ms(10) is None and no_deadline.option() is None  # auto
    assert no_deadline.window == 4


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
        Pacer(10.0, 10, 4, max_window=2)
    with pytest.raises(ValueError):
        PacerConfig(margin=0)
    with pytest.raises(ValueError):
        PacerConfig(lower_below=0.99)


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
    assert ladder(4, 16) == [4, 8, 16] and ladder(3, 10) == [3, 6, 10] and ladder(2, 2) == [2]
