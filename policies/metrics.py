"""SLO attainment and goodput of a finished run, as `vllm bench serve --goodput` counts:
a request is good when it completed and met every bound of its SLO; goodput is good
requests per second of benchmark time (first arrival to last completion). Refused requests
count in the total and are never good."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policies.slo import SLO


@dataclass
class RequestResult:
    id: str
    kind: str
    arrival_s: float
    slo: SLO
    num_output: int = 0
    first_token_s: float | None = None
    finish_s: float | None = None
    refused: str | None = None  # the admission reason
    status: int = 200

    @property
    def is_good(self) -> bool:
        if self.refused is not None or self.finish_s is None or self.first_token_s is None:
            return False
        return self.slo.is_met(self.first_token_s - self.arrival_s,
                               self.finish_s - self.arrival_s, self.num_output)


@dataclass(frozen=True)
class Summary:
    num_requests: int
    num_good: int
    num_refused: int
    num_unfinished: int
    duration_s: float

    @property
    def attainment(self) -> float:
        return self.num_good / self.num_requests if self.num_requests else 0.0

    @property
    def goodput(self) -> float:
        return self.num_good / self.duration_s if self.duration_s > 0 else 0.0


def summarize(results: Sequence[RequestResult], kind: str | None = None) -> Summary:
    rs = [r for r in results if kind is None or r.kind == kind]
    if not rs:
        return Summary(0, 0, 0, 0, 0.0)
    start = min(r.arrival_s for r in results)
    end = max((r.finish_s if r.finish_s is not None else r.arrival_s) for r in results)
    return Summary(len(rs), sum(r.is_good for r in rs), sum(r.refused is not None for r in rs),
                   sum(r.refused is None and r.finish_s is None for r in rs),
                   max(end - start, 1e-9))
