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
