"""The input of a batch job: OpenAI Batch JSONL, one request per line:

    {"custom_id": "q1", "method": "POST", "url": "/v1/completions", "body": {...}}

Lines that are not such a request (invalid JSON, a missing or repeated custom_id, an
unknown url, ...) do not stop the job: each becomes a LineError (1-based line number and
reason) for the errors file. The body itself is checked later, exactly as the HTTP API
checks it (adapter.py): a bad body is an answer (a 4xx in the output), not a bad line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

URLS = {"/v1/completions": "completion", "/v1/chat/completions": "chat"}
FIELDS = ("custom_id", "method", "url", "body")


class InputError(Exception):
    """The input file cannot be read at all (missing, a directory, not UTF-8)."""


@dataclass(frozen=True)
class BatchLine:
    line_no: int  # 1-based
    custom_id: str
    url: str
    body: dict[str, Any]

    def __post_init__(self) -> None:
        if self.line_no < 1 or not self.custom_id or self.url not in URLS:
            raise ValueError(f"bad BatchLine {self.line_no} {self.custom_id!r} {self.url!r}")

    @property
    def kind(self) -> str:
        return URLS[self.url]


@dataclass(frozen=True)
class LineError:
    line_no: int
    reason: str
    custom_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line_no, "custom_id": self.custom_id, "reason": self.reason}


@dataclass(frozen=True)
class BatchInput:
    path: Path
    sha256: str  # of the file's bytes: what an output file records as its input
    lines: tuple[BatchLine, ...]
    errors: tuple[LineError, ...]

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(line.custom_id for line in self.lines)


def read_input(path: str | Path) -> BatchInput:
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the input {path}: {err}") from None
    lines: list[BatchLine] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    for no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue  # blank lines (a trailing newline, a spacer) are not requests
        parsed = parse_line(no, raw, seen)
        (errors if isinstance(parsed, LineError) else lines).append(parsed)
    return BatchInput(path, hashlib.sha256(data).hexdigest(), tuple(lines), tuple(errors))


def parse_line(no: int, raw: str, seen: dict[str, int]) -> BatchLine | LineError:
    """One line -> a request, or why not. `seen` (custom_id -> line) is updated."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as err:
        return LineError(no, f"invalid JSON: {err.msg} at column {err.colno}")
    if not isinstance(obj, dict):
        return LineError(no, f"not a JSON object but {type(obj).__name__}")
    cid = obj.get("custom_id")
    if "custom_id" not in obj:
        return LineError(no, "custom_id: missing")
    if not isinstance(cid, str) or not cid:
        return LineError(no, "custom_id: must be a non-empty string")
    if cid in seen:
        return LineError(no, f"custom_id: {cid!r} repeats line {seen[cid]}", cid)
    reason = _check_fields(obj)
    if reason is not None:
        return LineError(no, reason, cid)
    seen[cid] = no
    return BatchLine(no, cid, obj["url"], obj["body"])


def _check_fields(obj: dict[str, Any]) -> str | None:
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        return f"{unknown[0]}: unknown field (a line has {', '.join(FIELDS)})"
    if obj.get("method") != "POST":
        return f"method: must be \"POST\", got {json.dumps(obj.get('method'))}"
    url = obj.get("url")
    if url not in URLS:
        return f"url: unknown {json.dumps(url)} (supported: {', '.join(URLS)})"
    if not isinstance(obj.get("body"), dict):
        return "body: must be a JSON object"
    return None
