"""bench/slo_replay.py, bench/replay_traces.py and bench/slo_replay_compare.py: the simulator
on the engine check's own requests, each with its own acceptance."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bench.replay_traces import replay_specs, request_key, trace_requests
from bench.slo_engine_cells import ENGINE_PROFILE, cell_specs
from bench.slo_replay import replay
from bench.slo_replay_compare import compare
from policies.option import LINEAR, Option, default_option
from policies.policy import SLOPolicy
from policies.profile import Profile

LINEAR4 = Option(LINEAR, 4)
LINEAR8 = default_option(LINEAR)  # what fixed spec_linear runs


@pytest.fixture(scope="module")
def base() -> Profile:
    return Profile.load(ENGINE_PROFILE)


def _specs(base: Profile, n: int = 3, seed: int = 0):  # noqa: ANN202
    return cell_specs("tight", "low", seed, n, SLOPolicy(base).cost, 200)


def test_replay_specs_point_each_request_at_its_own_trace_and_check_it(base) -> None:  # noqa: ANN001
    specs = _specs(base)
    traced = Profile(base.cost, {}, {"requests": [request_key(1, s) for s in specs[::-1]]
                                     + [request_key(0, s) for s in specs]})
    assert [s.prompt_index for s in replay_specs(traced, specs, 0)] == [3, 4, 5]
    assert [s.prompt_index for s in replay_specs(traced, specs, 1)] == [2, 1, 0]
    with pytest.raises(ValueError, match="not traced"):
        replay_specs(traced, [replace(specs[0], max_tokens=specs[0].max_tokens + 1)], 0)
    with pytest.raises(ValueError, match="not traced"):
        replay_specs(traced, specs, 2)


def test_a_request_accepts_as_its_own_trace_and_steps_scale(base) -> None:  # noqa: ANN001
    spec = replace(_specs(base, 1)[0], max_tokens=40)
    traces = Profile(base.cost, {LINEAR8: [[(2, 8)] * 20, [(2, 1)] * 40]})  # all / none kept
    times = {}
    for index, factor in ((0, 1.0), (1, 1.0), (0, 2.0)):
        results, modes = replay(base, traces, [replace(spec, prompt_index=index)],
                                "spec_linear", 0, factor)
        times[index, factor] = results[0].finish_s - results[0].arrival_s
        assert modes == {"spec_linear": 1.0} and results[0].num_output == 40
    assert times[1, 1.0] > 4 * times[0, 1.0]  # 1 token a draft-verify pair against 8
    assert times[0, 2.0] == pytest.approx(2 * times[0, 1.0], rel=0.25)  # (step noise)


def test_traces_follow_each_requests_prompt_and_length(base) -> None:  # noqa: ANN001
    from bench.slo_engine import EngineBench

    specs = [replace(s, max_tokens=m) for s, m in zip(_specs(base, 2), (6, 11), strict=True)]
    traces = trace_requests(EngineBench(), specs, options=[LINEAR4])
    for spec, trace in zip(specs, traces[LINEAR4], strict=True):
        assert all(f == 2 and 1 <= t <= 4 for f, t in trace)
        # the prefill samples the first token; the iterations emit the rest (the last may
        # run past max_tokens, as calibration's traces do)
        assert spec.max_tokens - 1 <= sum(t for _, t in trace) < spec.max_tokens + 3


def _row(policy: str, seed: int, goodput: float, **variant) -> dict:  # noqa: ANN003
    return {"workload": "tight", "load": "low", "policy": policy, "seed": seed,
            "goodput": goodput, "attainment": goodput / 10, "num_refused": 1} | variant


def test_compare_takes_the_engine_rows_of_the_simulated_seeds_only(tmp_path) -> None:  # noqa: ANN001
    engine, sim = tmp_path / "engine.json", tmp_path / "sim.json"
    engine.write_text(json.dumps({"runs": [
        _row("auto", 0, 1.0), _row("spec_linear", 0, 2.0), _row("auto", 7, 9.0)]}))
    own = {"acceptance": "own", "steps": "fit"}
    sim.write_text(json.dumps({"runs": [
        _row("auto", 0, 3.0, **own, modes={"ar": 0.25, "spec_linear": 0.75}),
        _row("spec_linear", 0, 2.0, **own, modes={"spec_linear": 1.0})]}))
    text = compare(engine, sim)
    auto_line = next(x for x in text.splitlines() if x.split()[1:2] == ["auto/best"])
    assert auto_line.split()[2:] == ["0.50x", "1.50x"]  # engine seed 7 left out
    assert "spec_linear 75% ar 25%" in text


def test_run_cells_replays_at_the_engine_calls_slo_scale_and_keeps_both(base, tmp_path) -> None:  # noqa: ANN001
    from bench.slo_replay import run_cells

    specs = _specs(base)
    traced = Profile(base.cost, {LINEAR8: [[(2, 3)] * 30] * 3},
                     {"base_profile": str(ENGINE_PROFILE), "workload": "tight", "seeds": [0],
                      "num_requests": 3, "num_prompts": 200, "slo_scale": 1.0,
                      "requests": [request_key(0, s) for s in specs]})
    traced.save(tmp_path / "traces.json")
    out = tmp_path / "rows.json"
    rows = {scale: run_cells(tmp_path / "traces.json", ["low"], ["spec_linear"], "own", "fit",
                             None, out, slo_scale=scale)[0] for scale in (None, 1.38)}
    assert rows[None]["slo_scale"] == 1.0 and rows[1.38]["slo_scale"] == 1.38
    assert rows[1.38]["rate_rps"] == pytest.approx(rows[None]["rate_rps"] / 1.38, rel=1e-3)
    assert len(json.loads(out.read_text())["runs"]) == 2


def test_steps_from_recorded_points_set_the_simulators_step_times(base, tmp_path) -> None:  # noqa: ANN001
    from bench.engine_steps import pooled_points

    steps = tmp_path / "steps.json"  # bench.engine_steps' format: the base's points, 2x slower
    steps.write_text(json.dumps({"runs": [{"points": [[t, r, 2 * s] for t, r, s in base.cost]}]}))
    spec = replace(_specs(base, 1)[0], max_tokens=40)
    traces = Profile(base.cost, {LINEAR8: [[(2, 4)] * 20]})
    took = {}
    for label, points in (("fit", None), ("points", pooled_points(steps))):
        results, _ = replay(base, traces, [spec], "spec_linear", 0, step_points=points)
        took[label] = results[0].finish_s - results[0].arrival_s
    assert took["points"] == pytest.approx(2 * took["fit"], rel=0.25)  # (step noise)


def test_the_recorder_keeps_every_engine_step_of_each_run(base) -> None:  # noqa: ANN001
    from bench.engine_steps import record

    # SLOs 3x looser than the profile's: feasible on a machine slower than it
    rows = record("tight", "low", [0], ["spec_linear"], 2, ENGINE_PROFILE, 3.0)
    assert rows[0]["num_requests"] == 2 and rows[0]["num_refused"] == 0
    points = rows[0]["points"]
    # a draft and a verify step per iteration, over ~25 output tokens each
    assert len(points) >= 10 and all(t >= r >= 1 and s > 0 for t, r, s in points)
