"""bench.sync_steps' dry run: every shape's step runs with the torch kernels (the check itself
needs CUDA's sync debug mode; on the CPU, tests/engine/test_sync_free_step_meta.py checks)."""

from __future__ import annotations

import pytest

from bench import sync_steps


def test_the_dry_run_steps_every_shape(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_KERNELS", "torch")
    assert sync_steps.main(["--cpu", "--context", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "kernels torch" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["decode"] * 2 + ["linear"] * 2 + [
        "quadratic"]
    assert all(line.endswith("n/a (cpu)") for line in lines[1:])
