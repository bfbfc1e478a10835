"""The command's refusals, before any work (no Ray is started for these)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.batch.cmd import main, parse_args, parse_duration
from tests.cluster.batch.test_lines import write_mixed

ROOT = Path(__file__).resolve().parents[3]


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code)


def test_durations() -> None:
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800
    assert parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    assert parse_duration("1.5m") == 90
    for bad in ("", "soon", "0", "-5m", "5 minutes"):
        with pytest.raises(Exception, match="duration|deadline"):
            parse_duration(bad)


def test_a_window_over_the_cap_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--input", "a", "--output", "b", "--window", "8", "--max-in-flight", "4"])
    assert exc.value.code == 2 and "--window 8 must be <= --max-in-flight 4" in \
        capsys.readouterr().err
    args = parse_args(["--input", "a", "--output", "b", "--window", "2"])
    assert (args.window, args.max_in_flight) == (2, None)


def test_requests_in_flight_base_and_cap() -> None:
    from cluster.batch.job import BatchJob
    from cluster.config import load_config
    from cluster.serve_cmd import read_yaml

    config = load_config(read_yaml(ROOT / "ray_configs" / "batch.yaml", None)[0]["args"])

    def windows(*flags: str) -> tuple[int, int]:
        return BatchJob(parse_args(["--input", "a", "--output", "b", *flags]), 0.0
                        )._windows(config)

    # Its own replicas: max_num_seqs (64); beside online traffic 1/16 of it, no more unless
    # the user raises the cap.
    assert windows() == (64, 64) and windows("--app", "x") == (4, 4)
    assert windows("--window", "2") == (2, 64) and windows("--max-in-flight", "8") == (8, 8)
    assert windows("--app", "x", "--window", "2", "--max-in-flight", "16") == (2, 16)
    assert windows("--app", "x", "--window", "8") == (8, 8)


def test_strict_deadline_exits_with_the_estimate(tmp_path: Path, capsys) -> None:
    inp = write_mixed(tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    code = exit_code(["--input", str(inp), "--output", str(out), "--deadline", "0.001s",
                      "--strict-deadline"])
    said = capsys.readouterr().out
    assert code == 3, said
    assert "CANNOT be met" in said and "not starting" in said and "estimate" in said
    assert not out.exists() or out.read_text() == ""  # nothing ran
    bad = [json.loads(x)["line"] for x in (tmp_path / "out.errors.jsonl").read_text().split(
        "\n") if x]
    assert bad == [7, 20, 33, 50, 81]


def test_an_output_of_another_input_is_refused(tmp_path: Path, capsys) -> None:
    a, b = write_mixed(tmp_path / "a.jsonl"), write_mixed(tmp_path / "b.jsonl", n=90)
    out = tmp_path / "out.jsonl"
    exit_code(["--input", str(a), "--output", str(out), "--deadline", "0.001s",
               "--strict-deadline"])  # writes the sidecar, runs nothing
    assert exit_code(["--input", str(b), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "written for a different input" in err and "Traceback" not in err


def test_an_unreadable_input_is_a_message(tmp_path: Path, capsys) -> None:
    assert exit_code(["--input", str(tmp_path / "nope.jsonl"), "--output",
                      str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "cannot read the input" in err and "Traceback" not in err


def test_an_output_in_a_missing_folder_is_a_message(tmp_path: Path, capsys) -> None:
    inp = write_mixed(tmp_path / "in.jsonl")
    assert exit_code(["--input", str(inp), "--output", str(tmp_path / "no" / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "No such file or directory" in err and "Traceback" not in err
