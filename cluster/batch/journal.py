"""The output file of a batch job: one OpenAI Batch result per line, appended as each request
finishes, written with one write() and fsynced before the next, so a crash, kill -9 or
Ctrl-C loses nothing already written.

Whose input it is: beside the output lives a sidecar, `<output>.meta.json`, holding the
sha256 of the input file it was written for. A rerun with a different input (edited,
or another file) is refused before any work; without a sidecar (written by hand, or an old
tool) every custom_id in the output must be one of the input's, or it is refused too.

Resume: the custom_ids already in the output are skipped. A last line cut short by a crash
in the middle of a write (no newline, or not JSON) is truncated away, and said so.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.batch.lines import BatchInput


class OutputError(Exception):
    """The output cannot be used for this input: belongs to another, or is corrupt."""


@dataclass(frozen=True)
class Resumed:
    done: dict[str, dict[str, Any]]  # custom_id -> its result line, already in the output
    truncated_bytes: int  # a torn last line removed


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + ".meta.json")


def prepare(output: str | Path, inp: BatchInput) -> Resumed:
    """Check that `output` belongs to `inp`, repair a torn tail, and return what is done."""
    output = Path(output)
    meta = sidecar_path(output)
    if output.is_dir():
        raise OutputError(f"the output {output} is a directory")
    if meta.exists():
        recorded = _read_meta(meta)
        if recorded.get("input_sha256") != inp.sha256:
            raise OutputError(
                f"{output} was written for a different input: {meta.name} records "
                f"{recorded.get('input')} with sha256 {str(recorded.get('input_sha256'))[:12]}"
                f"..., this input {inp.path} has {inp.sha256[:12]}...; pass another --output "
                f"or delete {output} and {meta.name}")
    done, truncated = _read_results(output) if output.exists() else ({}, 0)
    strangers = sorted(set(done) - inp.ids)
    if strangers:
        raise OutputError(f"{output} holds {len(strangers)} custom_id(s) that are not in "
                          f"{inp.path} (first: {strangers[0]!r}): it belongs to another input")
    if not meta.exists():
        _write_meta(meta, inp)
    return Resumed(done, truncated)


def _read_meta(meta: Path) -> dict[str, Any]:
    try:
        out = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise OutputError(f"cannot read {meta}: {err}") from None
    if not isinstance(out, dict):
        raise OutputError(f"{meta}: not a JSON object")
    return out


def _write_meta(meta: Path, inp: BatchInput) -> None:
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(json.dumps({"input": str(inp.path), "input_sha256": inp.sha256,
                               "num_requests": len(inp.lines)}) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, meta)
    _fsync_dir(meta.parent)


def _read_results(output: Path) -> tuple[dict[str, dict[str, Any]], int]:
    data = output.read_bytes()
    whole, _, tail = data.rpartition(b"\n")  # tail: bytes after the last newline (torn)
    lines = whole.split(b"\n") if whole or data.startswith(b"\n") else []
    done: dict[str, dict[str, Any]] = {}
    keep = 0  # bytes of the whole, parsable lines
    for i, raw in enumerate(lines):
        obj = _parse(raw)
        if obj is None:
            if i == len(lines) - 1 and not tail:
                break  # the last line is garbage (a torn write that got its newline): drop
            raise OutputError(f"{output}: line {i + 1} is not a result (only the last line "
                              f"may be torn by a crash): {raw[:80]!r}")
        cid = obj["custom_id"]
        if cid in done:
            raise OutputError(f"{output}: custom_id {cid!r} appears twice (line {i + 1})")
        done[cid] = obj
        keep += len(raw) + 1
    truncated = len(data) - keep
    if truncated:
        with open(output, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
    return done, truncated


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
        return None
    return obj


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ResultWriter:
    """Appends one JSON line per result: one write() of the whole line, then fsync."""

    def __init__(self, output: str | Path) -> None:
        self.path = Path(output)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.num_written = 0

    def append(self, result: dict[str, Any]) -> None:
        data = (json.dumps(result, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:  # a regular file takes it whole; loop in case it does not
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self.num_written += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_errors(path: str | Path, errors: list[dict[str, Any]]) -> None:
    """The errors file, rewritten whole each run (bad lines are found again each time)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in errors))
    os.replace(tmp, path)
