"""bench.kernels times every callable of a case the same way: compiled first, warmed up
together, sampled in the same rotated rounds (the thirteenth session's verdict and forced
split figures were not comparable: each was timed alone, some right after their compile)."""

from __future__ import annotations

import itertools
import math

import pytest

from bench.kernel_cases import Case
from bench.kernel_timing import Rounds, launch_us, time_side_by_side
from bench.kernels import CaseTiming, run_case


def test_every_callable_is_warmed_and_sampled_alike_in_rotated_rounds() -> None:
    log: list[tuple[str, str]] = []
    fns = {n: (lambda n=n: log.append(("call", n))) for n in "abc"}
    sync = lambda: log.append(("sync", ""))  # noqa: E731
    figures = iter([5.0, 1.0, 3.0] * 3)

    def sample(fn) -> float:  # noqa: ANN001
        fn()
        log.append(("sample", log[-1][1]))
        return next(figures)

    ticks = itertools.count()  # the clock advances 1 s per read: two warm-up rounds of 2.5 s
    got = time_side_by_side(fns, sample, Rounds(warmup_s=2.5, rounds=3), sync,
                            lambda: next(ticks))
    first_sample = next(i for i, e in enumerate(log) if e[0] == "sample")
    warm = [n for kind, n in log[:first_sample - 1]]  # the last call is the sample's own
    assert warm == list("abc") + [""] + list("abc") + [""]  # the device drained each round
    sampled = [n for kind, n in log if kind == "sample"]
    rounds = [sampled[i:i + 3] for i in range(0, 9, 3)]
    assert all(sorted(r) == list("abc") for r in rounds)  # each callable once per round
    assert [r[0] for r in rounds] == list("abc")  # rotated: none always sampled first
    # figures per name across the rounds: a 5,1,3 ... medians of what each got
    per_name = {n: sorted(f for f, s in zip([5.0, 1.0, 3.0] * 3, sampled, strict=True) if s == n)
                for n in "abc"}
    assert got == {n: v[1] for n, v in per_name.items()}


def test_no_warm_up_round_when_warmup_is_zero() -> None:
    calls = []
    got = time_side_by_side({"a": lambda: calls.append("a")}, lambda fn: 7.0,
                            Rounds(warmup_s=0.0, rounds=1), lambda: None)
    assert calls == [] and got == {"a": 7.0}


def test_launch_us_drains_the_device_around_its_calls() -> None:
    log = []
    launch_us(lambda: log.append("call"), lambda: log.append("sync"), calls=4)
    assert log == ["sync"] + ["call"] * 4 + ["sync"]


def _case(log: list[str]) -> Case:
    """Callables that log their calls and return the figure a fake sample reports."""
    def fn(name: str, figure: float):  # noqa: ANN202
        def call() -> float:
            log.append(name)
            return figure
        return call

    def broken() -> None:
        raise RuntimeError("no such backend")

    return Case("attention", "tiny", "decode b2 S1", fn("triton", 30.0), fn("reference", 0.0),
                {"sdpa": fn("sdpa", 15.0), "broken": broken}, lambda a, b: 0.0,
                {"S=1": fn("S=1", 30.0), "S=2": fn("S=2", 50.0)})


def _timing(log: list[str]) -> CaseTiming:
    def sample(fn) -> float:  # noqa: ANN001
        figure = fn()
        log.append("sample " + log[-1])
        return figure

    return CaseTiming(sample, lambda: None, Rounds(warmup_s=0.0, rounds=3), 2)


def test_the_verdict_and_the_variants_are_timed_in_the_same_rounds() -> None:
    log: list[str] = []
    row = run_case(_case(log), _timing(log), deadline=math.inf)
    first_sample = next(i for i, e in enumerate(log) if e.startswith("sample"))
    # every callable's first call (its compile) before any figure is taken
    assert set(log[:first_sample]) >= {"triton", "sdpa", "S=1", "S=2"}
    sampled = [e.split()[1] for e in log if e.startswith("sample")]
    assert sorted(sampled) == sorted(["triton", "sdpa", "S=1", "S=2"] * 3)
    assert row.triton_us == 30.0 and row.torch_us == 15.0 and row.baseline == "sdpa"
    assert row.speedup == pytest.approx(0.5)
    assert "triton S=1:30.0us S=2:50.0us" in row.note and "broken: RuntimeError" in row.note
    assert row.launch_us >= 0


def test_past_the_budget_the_variants_are_skipped_not_the_verdict() -> None:
    log: list[str] = []
    row = run_case(_case(log), _timing(log), deadline=-math.inf)
    assert "S=1" not in log and "S=2" not in log
    assert "skipped (time): S=1 S=2" in row.note
    assert row.triton_us == 30.0 and row.baseline == "sdpa"
