"""The engine core's admission gate: newcomers to a busy engine wait (a few steps at most) for
the batch to be back at its recent level, then join it together; an idle engine, a job with
an SLO and a gate that is off admit at once."""

from __future__ import annotations

import pytest

from cluster.admission_gate import AdmissionGate, GateConfig
from cluster.job import ChoiceSpec, GenerateJob
from cluster.slo import SLOSpec
from engine.params import DecodeParams, Mode, SamplingParams


def job(name: str, slo: SLOSpec | None = None) -> GenerateJob:
    return GenerateJob(name, (ChoiceSpec(0, "x", SamplingParams(max_tokens=4)),),
                       DecodeParams(mode=Mode.AR), slo=slo)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def busy_gate(hold: int = 4, level: int = 8) -> tuple[AdmissionGate, Clock]:
    """A gate that has seen `level` requests in the engine a moment ago."""
    clock = Clock()
    gate = AdmissionGate(GateConfig(max_hold_steps=hold, window_s=1.0), clock)
    assert gate.due(level, step=0) == []
    clock.t = 0.1
    return gate, clock


def test_off_or_idle_admits_at_once() -> None:
    off = AdmissionGate(GateConfig(max_hold_steps=0))
    a = job("a")
    assert off.offer(a, num_running=5, step=1) == [a]
    gate, _ = busy_gate()
    assert gate.offer(a, num_running=0, step=1) == [a]


def test_newcomers_wait_for_the_batch_to_refill_then_join_together() -> None:
    gate, _ = busy_gate(level=8)
    a, b = job("a"), job("b")
    assert gate.offer(a, num_running=6, step=1) == []  # 7 of the recent 8
    assert gate.due(6, step=2) == [] and gate.num_held == 1
    assert gate.offer(b, num_running=6, step=2) == [a, b]  # back at 8
    assert gate.num_held == 0


def test_a_held_job_waits_at_most_max_hold_steps() -> None:
    gate, _ = busy_gate(hold=3, level=8)
    a = job("a")
    assert gate.offer(a, num_running=4, step=10) == []
    assert gate.due(4, step=12) == []
    assert gate.due(4, step=13) == [a]


def test_the_engine_going_idle_releases_what_is_held() -> None:
    gate, _ = busy_gate(level=8)
    a = job("a")
    assert gate.offer(a, num_running=3, step=1) == []
    assert gate.due(0, step=2) == [a]


def test_a_job_with_an_slo_is_never_held_and_takes_the_held_ones_along() -> None:
    gate, _ = busy_gate(level=8)
    a, b = job("a"), job("b", SLOSpec(ttft_ms=500))
    assert gate.offer(a, num_running=3, step=1) == []
    assert gate.offer(b, num_running=3, step=1) == [a, b]


def test_the_recent_level_forgets_after_the_window() -> None:
    gate, clock = busy_gate(level=8)
    a = job("a")
    assert gate.offer(a, num_running=3, step=1) == []
    clock.t = 1.5  # the level of 8 is older than window_s
    assert gate.due(3, step=2) == [a]


def test_config_checks_itself() -> None:
    with pytest.raises(ValueError, match="max_hold_steps"):
        GateConfig(max_hold_steps=-1)
    with pytest.raises(ValueError, match="window_s"):
        GateConfig(window_s=0)


def test_an_abort_finds_a_held_job_by_its_request_ids() -> None:
    """The engine core admits what is held before it applies an abort for one of them (so
    the abort reaches the engine and the client still hears "added"): the gate must know
    its held jobs' request ids (GenerateJob.request_id)."""
    gate, _ = busy_gate(level=8)
    a = job("a")
    assert gate.offer(a, num_running=3, step=1) == []
    assert gate.holds_any(["a-0"]) and not gate.holds_any(["a-1", "b-0"])
    assert gate.release() == [a] and not gate.holds_any(["a-0"])
