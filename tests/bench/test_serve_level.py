"""bench/serve_level.py: the figure `tandem bench serve` reports is the median of per-round
ratios with their range, and the round shown in detail is the median one."""

from __future__ import annotations

import pytest

from bench.serve_clients import RunResult
from bench.serve_level import Round, Timed, median_round, ratio_summary, variant_row


def test_the_median_of_rounds_not_the_best_and_its_range() -> None:
    assert ratio_summary([0.83, 0.95, 0.89]) == {
        "median": 0.89, "min": 0.83, "max": 0.95, "per_round": [0.83, 0.95, 0.89]}
    assert ratio_summary([0.8, 0.9])["median"] == 0.85
    assert median_round([0.83, 0.95, 0.89]) == 2
    assert median_round([0.9, 0.8]) == 1  # the lower middle of an even count
    with pytest.raises(ValueError):
        ratio_summary([])


def _timed(tok_s: float, **cpu: float) -> Timed:
    return Timed(RunResult(tokens=100, seconds=100 / tok_s, ttft_s=[0.1], gaps_s=[0.05]),
                 cpu)


def test_each_ratio_pairs_http_with_the_engine_run_of_its_own_round() -> None:
    http_cpu = {"proxy": 0.1, "ModelServer": 0.1, "engine core": 1.0, "engine step": 0.9,
                "bench (client)": 0.05}
    rounds = [Round(_timed(1000.0, all=1.0), None, {"single": _timed(900.0, **http_cpu)}),
              Round(_timed(1500.0, all=1.0), None, {"single": _timed(1200.0, **http_cpu)}),
              Round(_timed(800.0, all=1.0), None, {"single": _timed(760.0, **http_cpu)})]
    row = variant_row("single", rounds)
    # best HTTP over best engine would say 0.8; best HTTP over its own round's engine 0.8 too,
    # but the rounds say 0.9, 0.8 and 0.95: the median is 0.9
    assert row["ratio"]["per_round"] == [0.9, 0.8, 0.95] and row["ratio"]["median"] == 0.9
    assert row["median_round"] == 0 and row["http_tok_s"]["in_median_round"] == 900.0
    assert row["stack_cpu_ms_per_token"] == pytest.approx(0.3)  # proxy + replica + core - step


def test_a_ratio_divides_by_the_engine_runs_before_and_after_its_round() -> None:
    """The machine's speed drifts between runs: HTTP is set against the engine alone's
    tokens over the mean time of the runs around it, not the run before alone."""
    http = {"single": _timed(1000.0, **{"engine step": 0.0})}
    rounds = [Round(_timed(1000.0, all=1.0), None, http, _timed(1500.0, all=1.0)),
              Round(_timed(1500.0, all=1.0), None, http, _timed(1500.0, all=1.0))]
    assert rounds[0].reference_tok_s == pytest.approx(200 / (0.1 + 0.1 / 1.5))  # 1200
    assert variant_row("single", rounds)["ratio"]["per_round"] == [0.833, 0.667]
    assert Round(_timed(1000.0), None, http).reference_tok_s == 1000.0  # no run after


def test_the_cpu_ratio_sets_the_cores_step_loop_cpu_against_the_engine_alones() -> None:
    def loop(tok_s: float, cpu_s: float) -> Timed:
        t = _timed(tok_s)
        t.res.engine_cpu_s = cpu_s
        return t

    r = Round(loop(1000.0, 0.08), None, {"single": loop(900.0, 0.09)}, loop(1000.0, 0.06))
    assert r.cpu_ratio("single") == pytest.approx(0.07 / 0.09)  # the mean of before and after
    assert Round(_timed(1000.0), None, {"single": _timed(900.0)}).cpu_ratio("single") is None


def test_the_client_keeps_off_a_pinned_core_and_placed_restores_this_process() -> None:
    import os
    import subprocess
    import sys

    from bench.serve_level import client_cpus, placed

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert client_cpus(sleeper.pid) is None  # a core that shares every CPU
        os.sched_setaffinity(sleeper.pid, {cpus[-1]})
        assert client_cpus(sleeper.pid) == set(cpus[:-1])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert client_cpus(None) is None
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    root = os.geteuid() == 0  # back to a lower niceness needs CAP_SYS_NICE: else keep it
    with placed({cpus[0]}, nice + 1 if root else None):
        assert os.sched_getaffinity(0) == {cpus[0]}
        assert os.getpriority(os.PRIO_PROCESS, 0) == nice + root
    assert sorted(os.sched_getaffinity(0)) == cpus
    assert os.getpriority(os.PRIO_PROCESS, 0) == nice


def test_the_engine_row_lists_each_rounds_run_before_and_the_last_rounds_after() -> None:
    """Rounds share their engine runs (a round's after is the next one's before), so each run
    is counted once: one before each round, and the last round's after."""
    from bench.serve_level import engine_row

    runs = [_timed(tok_s, all=1.0) for tok_s in (1000.0, 1100.0, 1200.0)]
    rounds = [Round(runs[0], None, {}, runs[1]), Round(runs[1], None, {}, runs[2])]
    row = engine_row(rounds)
    assert row["engine_tok_s"] == {"median": 1100.0, "per_run": [1000.0, 1100.0, 1200.0]}
    assert engine_row(rounds[:1])["engine_tok_s"]["per_run"] == [1000.0, 1100.0]
