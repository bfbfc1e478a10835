"""`tandem bench slo` on the modelled GPU profiles, user workloads and both acceptance
sources (small runs: the full tables are in BENCHMARKS.md)."""

from __future__ import annotations

import json

import pytest

from bench import slo
from bench.roofline import H200, Llama8B, step_s
from bench.synthetic_acceptance import PUBLISHED, with_nld8b_acceptance
from policies.option import Option
from policies.profile import Profile

ROOFLINE = slo.PROFILE.parent / "profiles" / "roofline-h200-llama8b.json"


def test_the_roofline_profile_is_modelled_and_derived() -> None:
    data = json.loads(ROOFLINE.read_text())
    assert data["meta"]["modelled"] is True
    assert data["model"]["weight_bytes"] == pytest.approx(16.06e9)
    assert data["model"]["kv_bytes_per_token"] == 131072
    one = step_s(H200, Llama8B(), 1, 1)
    assert one == pytest.approx(16.06e9 / (4.8e12 * 0.9), rel=0.06)  # weight-read bound
    assert step_s(H200, Llama8B(), 20, 1) == pytest.approx(one, rel=0.01)  # a 20-token chunk
    profile = Profile.load(ROOFLINE)  # today's reader ignores the new fields
    assert len(profile.cost) == len(data["cost"]) and profile.traces


def test_synthetic_acceptance_matches_the_published_figures() -> None:
    tpf = with_nld8b_acceptance(Profile.load(ROOFLINE)).tokens_per_forward()
    assert tpf[Option("spec_quadratic", 16)] == pytest.approx(PUBLISHED["spec_quadratic"],
                                                              rel=0.08)
    # linear: the published figure is per draft-and-verify iteration (two forwards here)
    assert 2 * tpf[Option("spec_linear", 16)] == pytest.approx(PUBLISHED["spec_linear"],
                                                               rel=0.1)
    assert tpf[Option("diffusion", 16)] == pytest.approx(PUBLISHED["diffusion"], rel=0.08)


def test_bench_slo_runs_a_user_workload_on_the_gpu_profile(tmp_path, capsys) -> None:
    spec = tmp_path / "w.json"
    spec.write_text(json.dumps({"voice": {"classes": [
        {"name": "voice", "weight": 1, "prompt_tokens": [8, 16], "output_tokens": [8, 16],
         "ttft_scale": 6, "tpot_scale": 0.7}]}}))
    slo.main(["--where", "sim", "--profile", str(ROOFLINE), "--acceptance", "nld8b",
              "--workload-spec", str(spec), "--workloads", "voice,tight", "--loads", "low",
              "--policies", "auto,spec_quadratic", "--sim-requests", "30", "--sim-seeds", "1",
              "--json"])
    out = json.loads(capsys.readouterr().out)
    assert {(r["workload"], r["policy"]) for r in out["runs"]} == {
        (w, p) for w in ("voice", "tight") for p in ("auto", "spec_quadratic")}
    assert all("attainment_voice" in r for r in out["runs"] if r["workload"] == "voice")


@pytest.mark.parametrize(("argv", "needle"), [
    (["--workloads", "nope"], "unknown workload 'nope'"),
    (["--loads", "lowish"], "unknown load 'lowish'"),
])
def test_bench_slo_names_a_bad_argument(argv, needle) -> None:
    with pytest.raises(SystemExit) as e:
        slo.main(["--where", "sim", *argv])
    assert needle in str(e.value)


def test_bench_slo_names_the_bad_field_of_a_workload_spec(tmp_path) -> None:
    spec = tmp_path / "w.json"
    spec.write_text(json.dumps({"w": {"classes": [{"name": "a", "weight": 1}]}}))
    with pytest.raises(SystemExit) as e:
        slo.main(["--where", "sim", "--workload-spec", str(spec)])
    assert "w.classes[0].prompt_tokens" in str(e.value)


def test_selector_cost_prints_one_line_per_batch(capsys) -> None:
    from bench import slo_selector_cost

    slo_selector_cost.main(["--requests", "8", "--calls", "2"])
    lines = capsys.readouterr().out.splitlines()[1:]  # after the header
    assert [x.split()[0] for x in lines] == ["slack", "mixed", "tight"]
    assert all("kept" in x and "full" in x for x in lines)


def test_plan_cost_times_every_engine_step() -> None:
    from bench import slo_plan_cost
    from bench.slo_selector_cost import PROFILE
    from policies.profile import Profile

    rows = slo_plan_cost.measure(Profile.load(PROFILE), "tight", "medium", 12, seed=0)
    assert len(rows) > 12  # one row per step: every request decodes several
    assert all(0 <= n <= 64 and plan >= choose >= 0 for n, plan, choose in rows)
    assert max(n for n, _, _ in rows) > 1 and sum(c for _, _, c in rows) > 0
    lines = slo_plan_cost.summary(rows)
    assert lines and sum(int(x.split()[2]) for x in lines) == len(rows)
    shares = [float(x) for x in slo_plan_cost.table_row(rows).split("max")[0].split()]
    assert len(shares) == len(slo_plan_cost.BUCKETS) and abs(sum(shares) - 100) < 0.5
    past = slo_plan_cost.measure(Profile.load(PROFILE), "tight", "3", 12, seed=0)
    assert max(n for n, _, _ in past) > max(n for n, _, _ in rows)  # 3x capacity: more run
