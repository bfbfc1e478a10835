"""The engine tools' default cost profile (bench/slo_engine_cells.py ENGINE_PROFILE): the
newest CPU profile of bench/profiles/, named in each engine tool's --help; the simulator
(`tandem bench slo`) keeps bench/slo_profile.json."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import pytest

from bench import engine_steps, slo, slo_engine_cells, slo_engine_diag
from bench.slo_engine_cells import ENGINE_PROFILE, add_run_options

TOOLS = [(slo_engine_cells.main, ["run"]), (slo_engine_diag.main, []), (engine_steps.main, [])]


@pytest.mark.parametrize("main, argv", TOOLS, ids=["cells run", "diag", "engine_steps"])
def test_each_engine_tool_names_its_default_profile_in_its_help(
        main: Callable[[list[str]], None], argv: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, even inside names
    assert f"--profilePROFILEcostprofile(default:bench/profiles/{ENGINE_PROFILE.name}" in text


def test_the_engine_tools_default_to_the_newest_cpu_profile_not_the_simulators() -> None:
    p = argparse.ArgumentParser()
    add_run_options(p, "auto")
    assert p.parse_args(["--workload", "tight", "--load", "low"]).profile == ENGINE_PROFILE
    measured = {path: json.loads(path.read_text())["meta"]["measured"]
                for path in ENGINE_PROFILE.parent.glob("cpu-*.json")}
    assert max(measured, key=measured.__getitem__) == ENGINE_PROFILE, (
        "a newer CPU profile: name it in ENGINE_PROFILE")
    assert slo.parse_args([]).profile == slo.PROFILE != ENGINE_PROFILE
