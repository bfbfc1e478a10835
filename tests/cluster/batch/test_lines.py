"""The batch input: good lines become requests, bad ones errors with their line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.batch.lines import InputError, read_input


def request(cid: str, url: str = "/v1/completions", **body: object) -> str:
    return json.dumps({"custom_id": cid, "method": "POST", "url": url,
                       "body": body or {"prompt": "def f(", "max_tokens": 2}})


BROKEN = {  # line number -> (text, what the reason starts with)
    7: ('{"custom_id": "x7", "method": "POST", "url": "/v1/completions", "body": {',
        "invalid JSON"),
    20: (json.dumps({"method": "POST", "url": "/v1/completions", "body": {}}),
         "custom_id: missing"),
    33: (request("r1"), "custom_id: 'r1' repeats line 2"),
    50: (request("x50", url="/v1/embeddings"), "url: unknown"),
    81: (json.dumps({"custom_id": "x81", "method": "GET", "url": "/v1/completions",
                     "body": {}}), "method: must be"),
}


def write_mixed(path: Path, n: int = 100) -> Path:
    lines = []
    for no in range(1, n + 1):
        lines.append(BROKEN[no][0] if no in BROKEN else request(f"r{no - 1}"))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_five_broken_lines_among_a_hundred(tmp_path: Path) -> None:
    inp = read_input(write_mixed(tmp_path / "in.jsonl"))
    assert len(inp.lines) == 95 and len(inp.errors) == 5
    for err in inp.errors:
        assert err.reason.startswith(BROKEN[err.line_no][1]), err
    assert [e.line_no for e in inp.errors] == sorted(BROKEN)
    assert inp.lines[0].line_no == 1 and inp.lines[0].custom_id == "r0"
    assert inp.lines[-1].line_no == 100
    assert inp.errors[2].custom_id == "r1"  # the repeat names its id


def test_other_bad_shapes(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_text("\n".join([
        "[1, 2]",
        json.dumps({"custom_id": "", "method": "POST", "url": "/v1/completions", "body": {}}),
        json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": []}),
        json.dumps({"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": {},
                    "extra": 1}),
        "",  # blank lines are skipped, not errors
        request("c", url="/v1/chat/completions", messages=[{"role": "user", "content": "hi"}]),
    ]))
    inp = read_input(p)
    assert [(e.line_no, e.reason.split(":")[0]) for e in inp.errors] == [
        (1, "not a JSON object but list"), (2, "custom_id"), (3, "body"), (4, "extra")]
    assert [(line.line_no, line.kind) for line in inp.lines] == [(6, "chat")]


def test_unreadable_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the input"):
        read_input(tmp_path / "missing.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="cannot read"):
        read_input(tmp_path / "bin.jsonl")
