"""Synthetic step plans of the modes' shapes (engine/synthetic.py) run on the executor as the
modes' own plans do, and bench/gpu.py's dry run goes end to end on them (torch kernels here:
the interpreter run is scripts/gpu_check.sh --cpu)."""

from __future__ import annotations

import json

import pytest

from bench import gpu
from engine.executor import ModelExecutor
from engine.synthetic import Shape, blocks_per_request, mode_shapes, plan_for


def test_every_shape_runs_and_writes_its_slots(tiny_model) -> None:
    shapes = mode_shapes([1, 3], [4], [3])
    blocks_each = blocks_per_request(40, 12, 16)
    executor = ModelExecutor(tiny_model, 3 * blocks_each, 16)
    for shape in shapes:
        plan = plan_for(shape, tiny_model.config, 40, 16, blocks_each)
        assert plan.num_tokens == shape.num_tokens
        out = executor.step(plan)
        rows = [len(w.sample_rows) for w in plan.works]
        assert [len(r.tokens) for r in out.results] == rows
        for w in plan.works:  # slots inside the request's own blocks, after its context
            table = w.chunk.block_table
            assert all(s // 16 in table for s in w.write_slots)
    with pytest.raises(ValueError, match="kind"):
        Shape("x", "prefill", 1, 1)


def test_bench_gpu_dry_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TANDEM_KERNELS", "torch")
    rc = gpu.main(["--cpu", "--out", str(tmp_path), "--decode", "1", "2", "--linear", "3",
                   "--quadratic", "3", "--profile-batches", "1", "2"])
    assert rc == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert [r["shape"] for r in result["rows"]] == [
        "decode b=1", "decode b=2", "linear draft B=3", "linear verify B=3", "quadratic B=3"]
    assert {e["option"] for e in result["efficiency"]} == {"spec_linear/3", "spec_quadratic/3"}
    profile = json.loads((tmp_path / "profiles" / "cpu-tiny.json").read_text())
    assert profile["meta"]["kind"] == "measured" and profile["cost"]
    assert "speculation efficiency" in (tmp_path / "gpu_table.txt").read_text()
