"""bench/slo_bound.py (the oracle bound) and bench/slo_mix.py (what decided a cell), on
tiny runs of the modelled H200 profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import slo, slo_bound, slo_mix
from bench.synthetic_acceptance import load_profile
from engine.simulator import SimConfig, Simulator
from policies.metrics import summarize
from policies.policy import SLOPolicy
from policies.workloads import LOADS, WORKLOADS, capacity_rps, generate

ROOFLINE = slo.PROFILE.parent / "profiles" / "roofline-h200-llama8b.json"
N = 24


@pytest.fixture(scope="module")
def profile():  # noqa: ANN201
    return load_profile(ROOFLINE, "profile")


def test_no_policy_beats_the_oracle_bound(profile) -> None:  # noqa: ANN001
    oracle = slo_bound.Oracle(profile)
    cell = slo_bound.bound(oracle, "mixed_tight", "high", 0, N)
    assert 0 < cell["met_alone"] <= N == cell["num_requests"]
    cost = SLOPolicy(profile).cost
    mix = WORKLOADS["mixed_tight"]
    specs = generate(mix, LOADS["high"] * capacity_rps(mix, cost), N, cost,
                     max(len(p) for p in profile.traces.values()), 0)
    for name in ("auto", "ar", "spec_linear", "spec_quadratic"):
        policy = SLOPolicy(profile, slo.policy_config(name))
        results = Simulator(profile, policy, SimConfig(seed=0)).run(specs)
        summary = summarize(results)
        assert summary.num_good <= cell["met_alone"], name
        assert summary.goodput <= cell["goodput_bound"] + 1e-9, name
        # The drain: no run ends before its latest request could finish alone.
        assert summary.duration_s >= cell["span_drain_s"] - 1e-9, name
        assert summary.goodput <= cell["goodput_bound_drain"] + 1e-9, name
    assert cell["span_drain_s"] > cell["span_s"]
    assert cell["goodput_bound_drain"] < cell["goodput_bound"]


def test_the_best_fixed_mode_is_read_from_its_own_profile_only(tmp_path: Path) -> None:
    run = {"workload": "mixed", "load": "high"}
    runs = [run | {"policy": "ar", "goodput": 5.0, "profile": "a.json"},
            run | {"policy": "spec_linear", "goodput": 9.0, "profile": "a.json + nld8b"},
            run | {"policy": "auto", "goodput": 99.0, "profile": "a.json"}]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"runs": runs}))
    label = slo_bound.profile_label(Path("bench/a.json"), "profile")
    assert slo_bound.best_fixed(path, label, "mixed", "high") == ("ar", 5.0)
    nld = slo_bound.profile_label(Path("a.json"), "nld8b")
    assert slo_bound.best_fixed(path, nld, "mixed", "high") == ("spec_linear", 9.0)
    assert slo_bound.best_fixed(path, label, "mixed", "low") is None
    single = tmp_path / "one.json"  # a plain `tandem bench slo --json` file: no field
    single.write_text(json.dumps({"runs": [run | {"policy": "ar", "goodput": 3.0}]}))
    assert slo_bound.best_fixed(single, label, "mixed", "high") == ("ar", 3.0)


def test_slo_mix_accounts_for_every_request_and_decision(profile) -> None:  # noqa: ANN001
    options, endings = slo_mix.cell(profile, "mixed_tight", "medium", "spec_linear", 0, N)
    assert sum(sum(c.values()) for c in endings.values()) == N
    assert set(endings) <= {"tight", "batch"}
    for kind, counts in options.items():  # a fixed mode: its option, or sitting out
        assert set(counts) <= {"spec_linear/8", "deferred"}, kind


def test_slo_mix_prints_one_json_object_per_policy(capsys) -> None:  # noqa: ANN001
    slo_mix.main(["--profile", str(ROOFLINE), "--workload", "tight", "--load", "low",
                  "--policies", "auto,spec_quadratic", "--requests", "12"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["policy"] for x in lines] == ["auto", "spec_quadratic"]
    for x in lines:
        tight = x["classes"]["tight"]
        assert sum(tight["endings"].values()) == 12
        assert sum(tight["decisions"].values()) == pytest.approx(1.0, abs=0.01)


def test_slo_mix_per_seed_gives_each_run_with_bench_slo_s_goodput(capsys) -> None:  # noqa: ANN001
    """--per-seed: one object per seed, its goodput the one `tandem bench slo` reports for
    that seed's run, and the acceptance estimates the run ended with."""
    args = ["--profile", str(ROOFLINE), "--workload", "tight", "--load", "medium",
            "--policies", "auto", "--requests", "12", "--seeds", "2"]
    slo_mix.main([*args, "--per-seed"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["seed"] for x in lines] == [0, 1]
    sim = slo.sim_runs(load_profile(ROOFLINE, "profile"), slo.parse_args(
        ["--where", "sim", "--workloads", "tight", "--loads", "medium", "--policies", "auto",
         "--sim-seeds", "2", "--sim-requests", "12"]), dict(WORKLOADS))
    assert sum(x["goodput"] for x in lines) / 2 == pytest.approx(sim[0]["goodput"], abs=1e-3)
    for x in lines:
        assert sum(x["decisions"].values()) == pytest.approx(1.0, abs=0.01)
        assert "spec_quadratic/4" in x["acceptance"]
