"""User-defined workloads from JSON (`tandem bench slo --workload-spec FILE.json`):

  {"NAME": {"classes": [{"name": "voice", "weight": 0.3, "prompt_tokens": [16, 48],
                         "output_tokens": [16, 48], "ttft_scale": 6, "tpot_scale": 0.7,
                         "deadline_scale": null}, ...]}, ...}

Scales are as in policies/workloads.py: multiples of the same request's latencies alone with
AR. Every error names the field it is about (WorkloadSpecError.field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from policies.workloads import RequestClass, Workload

_CLASS_FIELDS = {"name", "weight", "prompt_tokens", "output_tokens", "ttft_scale",
                 "tpot_scale", "deadline_scale"}


class WorkloadSpecError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def load_workloads(path: str | Path) -> dict[str, Workload]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WorkloadSpecError(str(path), f"cannot read a JSON workload spec: {e}") from e
    return parse_workloads(data)


def parse_workloads(data: Any) -> dict[str, Workload]:
    if not isinstance(data, dict) or not data:
        raise WorkloadSpecError("(top level)", "expected an object of named workloads")
    return {name: _workload(name, body) for name, body in data.items()}


def _workload(name: str, body: Any) -> Workload:
    classes = body.get("classes") if isinstance(body, dict) else None
    if not isinstance(classes, list) or not classes:
        raise WorkloadSpecError(f"{name}.classes", "expected a non-empty list of classes")
    return tuple(_class(f"{name}.classes[{i}]", c) for i, c in enumerate(classes))


def _class(where: str, c: Any) -> tuple[RequestClass, float]:
    if not isinstance(c, dict):
        raise WorkloadSpecError(where, "expected an object")
    unknown = sorted(set(c) - _CLASS_FIELDS)
    if unknown:
        raise WorkloadSpecError(f"{where}.{unknown[0]}", f"unknown field; expected some of "
                                f"{sorted(_CLASS_FIELDS)}")
    name = c.get("name")
    if not isinstance(name, str) or not name:
        raise WorkloadSpecError(f"{where}.name", "expected a non-empty string")
    weight = _number(c, "weight", where, required=True)
    assert weight is not None
    lengths = {k: _range(c, k, where) for k in ("prompt_tokens", "output_tokens")}
    scales = {k: _number(c, k, where) for k in ("ttft_scale", "tpot_scale", "deadline_scale")}
    return RequestClass(name, lengths["prompt_tokens"], lengths["output_tokens"],
                        **scales), weight


def _number(c: dict, key: str, where: str, required: bool = False) -> float | None:
    value = c.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise WorkloadSpecError(f"{where}.{key}", f"expected a number > 0, got {value!r}")
    return float(value)


def _range(c: dict, key: str, where: str) -> tuple[int, int]:
    value = c.get(key)
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in value)
            or not 1 <= value[0] <= value[1]):
        raise WorkloadSpecError(f"{where}.{key}",
                                f"expected [lo, hi] integers with 1 <= lo <= hi, got {value!r}")
    return value[0], value[1]
