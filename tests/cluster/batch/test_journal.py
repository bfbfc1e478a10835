"""The batch output: appended lines survive, a torn tail is cut, a stranger's file refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.batch.journal import OutputError, ResultWriter, prepare, sidecar_path
from cluster.batch.lines import read_input
from tests.cluster.batch.test_lines import request


def make_input(path: Path, n: int = 5, tag: str = "") -> Path:
    path.write_text("".join(request(f"r{i}", prompt=f"x{tag}", max_tokens=2) + "\n"
                            for i in range(n)))
    return path


def result(cid: str) -> dict:
    return {"id": f"batch_req_{cid}", "custom_id": cid,
            "response": {"status_code": 200, "request_id": "cmpl-1", "body": {}}, "error": None}


def test_resume_skips_written_ids_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    inp = read_input(make_input(tmp_path / "in.jsonl"))
    out = tmp_path / "out.jsonl"
    assert prepare(out, inp).done == {}
    assert sidecar_path(out).exists()
    with ResultWriter(out) as w:
        w.append(result("r0"))
        w.append(result("r3"))
    whole = out.read_bytes()
    with open(out, "ab") as f:  # a crash in the middle of a write
        f.write(b'{"id": "batch_req_r1", "custom_id": "r1", "resp')
    resumed = prepare(out, inp)
    assert set(resumed.done) == {"r0", "r3"}
    assert resumed.truncated_bytes == 47 and out.read_bytes() == whole
    with ResultWriter(out) as w:  # appending goes on after the cut
        w.append(result("r1"))
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == [
        "r0", "r3", "r1"]


def test_a_garbage_last_line_with_its_newline_is_cut_too(tmp_path: Path) -> None:
    inp = read_input(make_input(tmp_path / "in.jsonl"))
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(result("r2")) + "\n" + '{"custom_id": "r4", \x00\n')
    resumed = prepare(out, inp)
    assert set(resumed.done) == {"r2"} and resumed.truncated_bytes > 0


def test_a_damaged_middle_line_is_an_error(tmp_path: Path) -> None:
    inp = read_input(make_input(tmp_path / "in.jsonl"))
    out = tmp_path / "out.jsonl"
    out.write_text("garbage\n" + json.dumps(result("r2")) + "\n")
    with pytest.raises(OutputError, match="line 1 is not a result"):
        prepare(out, inp)


def test_an_output_of_another_input_is_refused_before_any_work(tmp_path: Path) -> None:
    first = read_input(make_input(tmp_path / "a.jsonl"))
    out = tmp_path / "out.jsonl"
    prepare(out, first)
    with ResultWriter(out) as w:
        w.append(result("r0"))
    other = read_input(make_input(tmp_path / "b.jsonl", tag="b"))  # same ids, other bodies
    with pytest.raises(OutputError, match="written for a different input"):
        prepare(out, other)
    # Without a sidecar: custom_ids the input does not have give it away.
    sidecar_path(out).unlink()
    with ResultWriter(out) as w:
        w.append(result("zz"))
    with pytest.raises(OutputError, match="not in .*zz"):
        prepare(out, first)
