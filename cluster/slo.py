"""A request's latency SLO at the edge: the pydantic shape (HTTP body and YAML), the object
handed to the engine, and the verdict (met or missed, per kind) once the request is done."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

# An hour: anything longer is not a latency objective but a typo.
MAX_SLO_MS = 3_600_000.0
SLO_KINDS = ("ttft", "tpot", "deadline")


class SLOSpec(BaseModel):
    """Latency objectives of one request, in milliseconds (each optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_ms: float | None = Field(None, gt=0, le=MAX_SLO_MS, allow_inf_nan=False,
                                  description="Time to the first token.")
    tpot_ms: float | None = Field(None, gt=0, le=MAX_SLO_MS, allow_inf_nan=False,
                                  description="Mean time per output token after the first.")
    deadline_ms: float | None = Field(None, gt=0, le=MAX_SLO_MS, allow_inf_nan=False,
                                      description="End-to-end latency.")
    best_effort: bool = Field(False, description="Never refused at admission when the bounds "
                              "look infeasible: run anyway, as fast as it can (batch jobs).")

    @property
    def is_empty(self) -> bool:
        return self.ttft_ms is None and self.tpot_ms is None and self.deadline_ms is None


@dataclass(frozen=True)
class RequestSLO:
    """What the engine gets when policies/ has no SLO type of its own."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    deadline_ms: float | None = None


def engine_slo(spec: SLOSpec | None) -> object:
    """The engine-side SLO object: policies.slo.SLO when that module exists."""
    if spec is None or spec.is_empty:
        return None
    fields = {"ttft_ms": spec.ttft_ms, "tpot_ms": spec.tpot_ms, "deadline_ms": spec.deadline_ms}
    try:
        from policies.slo import SLO  # written by the SLO-policy work; optional here
    except ImportError:
        return RequestSLO(**fields)
    try:
        return SLO(**fields, best_effort=spec.best_effort)
    except TypeError as err:  # a different constructor: keep serving, say so once
        log.warning("policies.slo.SLO(%s) failed (%s); passing a RequestSLO", fields, err)
        return RequestSLO(**fields)


@dataclass(frozen=True)
class Latency:
    """What one finished request measured, in seconds."""

    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float


def verdicts(spec: SLOSpec | None, lat: Latency) -> dict[str, bool]:
    """kind -> met, for each kind the SLO sets. A missing first token misses ttft."""
    if spec is None:
        return {}
    out: dict[str, bool] = {}
    if spec.ttft_ms is not None:
        out["ttft"] = lat.ttft_s is not None and lat.ttft_s * 1e3 <= spec.ttft_ms
    if spec.tpot_ms is not None:
        out["tpot"] = lat.tpot_s is None or lat.tpot_s * 1e3 <= spec.tpot_ms
    if spec.deadline_ms is not None:
        out["deadline"] = lat.e2e_s * 1e3 <= spec.deadline_ms
    return out


def usage(spec: SLOSpec | None, lat: Latency) -> float | None:
    """The share of its SLO a finished request used, the worst of its kinds (1.0: just met,
    above: missed); None without an SLO. What a replica learns its capacity from
    (policies/capacity.py). A request without a first token used its TTFT up to its end."""
    if spec is None or spec.is_empty:
        return None
    used = []
    if spec.ttft_ms is not None:
        used.append((lat.e2e_s if lat.ttft_s is None else lat.ttft_s) * 1e3 / spec.ttft_ms)
    if spec.tpot_ms is not None and lat.tpot_s is not None:
        used.append(lat.tpot_s * 1e3 / spec.tpot_ms)
    if spec.deadline_ms is not None:
        used.append(lat.e2e_s * 1e3 / spec.deadline_ms)
    return max(used) if used else None
