"""bench/slo_engine_cells.py: the run order that spreads drift over policies, and the
summary's per-seed ratios and same-seed noise (plain rows, no engine)."""

from __future__ import annotations

import json

import pytest

from bench.slo_engine_cells import cell_stats, main, run_order, step_ratio, summary


def test_run_order_alternates_by_seed_and_goes_there_and_back():
    assert run_order(("auto", "ar"), 0, 1) == [("auto", 0), ("ar", 0)]
    assert run_order(("auto", "ar"), 1, 1) == [("ar", 0), ("auto", 0)]
    assert run_order(("auto", "ar"), 0, 2) == [("auto", 0), ("ar", 0), ("ar", 1), ("auto", 1)]


def _row(policy: str, seed: int, goodput: float, repeat: int = 0) -> dict:
    return {"workload": "interactive", "load": "high", "policy": policy, "seed": seed,
            "repeat": repeat, "goodput": goodput, "load_avg": 1.0}


def test_cell_stats_pairs_each_seed_with_its_own_best_fixed_mode():
    rows = [_row("auto", 0, 9.0), _row("ar", 0, 10.0), _row("spec_linear", 0, 4.0),
            _row("auto", 1, 12.0), _row("ar", 1, 8.0), _row("ar", 1, 12.0, repeat=1)]
    st = cell_stats(rows)
    assert st["means"]["ar"] == {0: 10.0, 1: 10.0}  # repeats averaged
    assert st["per_seed"] == pytest.approx([0.9, 1.2])
    assert st["ratio"] == pytest.approx(10.5 / 10.0)
    assert st["noise"] == pytest.approx(4.0 / 10.0)  # ar seed 1: 8 and 12


def test_a_seed_no_fixed_mode_ran_has_no_per_seed_ratio():
    rows = [{"policy": "auto", "seed": 0, "goodput": 1.0},
            {"policy": "auto", "seed": 1, "goodput": 2.0},
            {"policy": "spec_linear", "seed": 1, "goodput": 1.0}]
    assert cell_stats(rows)["per_seed"] == [2.0]
    assert cell_stats(rows[:1])["per_seed"] == [] and cell_stats(rows[:1])["ratio"] is None


def test_summary_marks_policies_on_fewer_seeds(tmp_path):
    out = tmp_path / "grid.json"
    rows = [_row("auto", s, 10.0) for s in (0, 1, 2)] + [_row("ar", s, 10.0) for s in (0, 1, 2)]
    out.write_text(json.dumps({"runs": rows + [_row("spec_linear", 0, 3.0)]}))
    text = summary(out)
    assert "[1s]" in text and "1.00x" in text and "1.00-1.00x" in text


def test_a_run_with_no_step_has_no_step_ratio_and_the_summary_skips_it(tmp_path):
    # AR on the tight workload refuses every request (its TPOT bound is below AR alone)
    assert step_ratio([]) is None and step_ratio([1.0, 2.0, 4.0]) == 2.0
    out = tmp_path / "grid.json"
    rows = [_row("auto", 0, 2.0) | {"step_ratio": 1.25}, _row("ar", 0, 0.0) | {"step_ratio": None}]
    out.write_text(json.dumps({"runs": rows}))
    assert summary(out).rstrip().endswith("1.25-1.25")


def test_per_seed_lists_goodput_and_refusals_with_each_seeds_best_fixed_mode(tmp_path, capsys):
    out = tmp_path / "grid.json"
    call = {"num_refused": 0, "slowdown": 1.0, "probe": 1.038}
    rows = [_row("auto", 0, 1.0) | call | {"num_refused": 5}, _row("ar", 0, 0.0) | call,
            _row("spec_linear", 0, 2.0) | call, _row("auto", 1, 3.0) | call,
            _row("spec_quadratic", 1, 1.5) | call | {"num_refused": 7}]
    out.write_text(json.dumps({"runs": rows}))
    main(["summary", "--out", str(out), "--per-seed"])
    seed0, seed1 = capsys.readouterr().out.splitlines()[1:]
    assert seed0.split()[2:] == ["0", "1.000", "[5]", "0.000", "[0]", "2.000", "[0]", "-",
                                 "spec_linear", "0.50x", "x1.000", "(x1.038)"]
    assert "1.500 [7]" in seed1 and "spec_quadratic" in seed1 and "2.00x" in seed1
    out.write_text(json.dumps({"runs": [rows[0], rows[1]]}))  # no fixed mode met any request
    main(["summary", "--out", str(out), "--per-seed"])
    assert capsys.readouterr().out.splitlines()[1].split()[-4:] == ["-", "inf", "x1.000",
                                                                     "(x1.038)"]


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit, match="--policies: unknown policy 'bogus'"):
        main(["run", "--workload", "mixed", "--load", "high", "--policies", "auto,bogus"])
    with pytest.raises(SystemExit, match="--seeds"):
        main(["run", "--workload", "mixed", "--load", "high", "--seeds", "a"])
    with pytest.raises(SystemExit, match="--slowdown: a factor in"):
        main(["run", "--workload", "mixed", "--load", "high", "--slowdown", "0.4"])
    with pytest.raises(SystemExit, match="--slowdown: the profile's clock"):
        main(["run", "--workload", "tight", "--load", "low", "--clock", "profile",
              "--slowdown", "1.2"])


def test_diag_sorts_failures_into_refused_late_first_token_and_missed_pace():
    from bench.slo_engine_diag import failures
    from policies.metrics import RequestResult
    from policies.slo import SLO

    slo = SLO(ttft_ms=100.0, tpot_ms=10.0)
    refused = RequestResult("a", "interactive", 0.0, slo, refused="overloaded")
    late = RequestResult("b", "interactive", 0.0, slo, 10, first_token_s=0.2, finish_s=0.25)
    slow = RequestResult("c", "interactive", 0.0, slo, 10, first_token_s=0.05, finish_s=0.5)
    good = RequestResult("d", "interactive", 0.0, slo, 10, first_token_s=0.05, finish_s=0.1)
    assert failures([refused, late, slow, good]) == {"refused": 1, "ttft": 1, "pace": 1}


def test_diag_sorts_refusals_by_class_and_admission_rule():
    from bench.slo_engine_diag import refusals
    from policies.metrics import RequestResult
    from policies.slo import SLO

    slo = SLO(ttft_ms=100.0, tpot_ms=10.0)
    reasons = ["overloaded: predicted time to first token ~120 ms > ttft_ms=100",
               "overloaded: predicted time per output token ~12.0 ms > tpot_ms=10",
               "overloaded: predicted time per output token ~10.4 ms > tpot_ms=10 beside 0 "
               "running requests that cannot wait",
               "tpot_ms=10 cannot be met even alone: the fastest mode takes ~11.0 ms",
               "overloaded: predicted time to first token ~130 ms > ttft_ms=100"]
    results = [RequestResult(str(i), "interactive", 0.0, slo, refused=r)
               for i, r in enumerate(reasons)]
    results.append(RequestResult("b", "batch", 0.0, slo, refused="queue full"))
    results.append(RequestResult("g", "batch", 0.0, slo, 10, first_token_s=0.05, finish_s=0.1))
    assert refusals(results) == {"interactive ttft": 2, "interactive tpot": 1,
                                 "interactive tpot idle": 1, "interactive alone": 1,
                                 "batch other": 1}


def test_auto_ar_is_auto_with_an_ar_only_pool():
    from bench.slo_engine_cells import engine_policy_config
    from policies.option import AR1

    config = engine_policy_config("auto_ar")
    assert config.fixed is None and config.selector.pool == (AR1,)
    assert engine_policy_config("ar").fixed == AR1


def test_step_ratios_keep_each_reported_step_over_the_profile_and_pass_the_plan_on():
    from bench.slo_engine_cells import StepRatios
    from policies.decision import BatchDecision, SchedulerView, StepRecord

    class Cost:
        def predict(self, num_tokens: int, num_requests: int = 1) -> float:
            return 0.001 * num_tokens

    class Inner:
        name = "inner"

        def plan(self, view: SchedulerView) -> BatchDecision:
            return BatchDecision((), {})

    recorder = StepRatios(Inner(), Cost())  # type: ignore[arg-type]
    view = SchedulerView((), (), 64, 8, 16)
    assert recorder.plan(view) == BatchDecision((), {}) and recorder.ratios == []
    recorder.plan(SchedulerView((), (), 64, 8, 16, last_step=StepRecord(4, 2, 0.006)))
    assert recorder.ratios == pytest.approx([1.5]) and recorder.name == "inner"
