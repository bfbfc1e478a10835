"""A request's service-level objective, and whether a finished request met it.

Times are milliseconds in the SLO (what users write) and seconds everywhere else. A bound
left as None is not checked. TPOT is measured as vLLM's `bench serve` does: the mean time
per output token after the first, (e2e - ttft) / (num_output - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

# Plan to use at most this share of the time a request has left (the selector's and the
# deferral's margin against cost-model error).
SAFETY = 0.85


@dataclass(frozen=True)
class SLO:
    ttft_ms: float | None = None  # time to first token
    tpot_ms: float | None = None  # mean time per output token after the first
    deadline_ms: float | None = None  # end to end, from arrival to the last token
    priority: int = 0  # higher runs first
    allow_lossy: bool = False  # auto may choose block diffusion (output may differ from AR)
    best_effort: bool = False  # never refused at admission, even when infeasible

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tpot_ms", "deadline_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"SLO.{name} must be > 0 or None, got {value}")

    @property
    def has_bounds(self) -> bool:  # on every request's per-step path: no generator
        return (self.ttft_ms is not None or self.tpot_ms is not None
                or self.deadline_ms is not None)

    def tpot_below(self, seconds: float) -> bool:
        """Its TPOT bound is below `seconds` per token (AR's time alone: only speculation
        meets it; the selector, the decision cache and admission all ask this)."""
        return self.tpot_ms is not None and self.tpot_ms / 1e3 < seconds

    def is_met(self, ttft_s: float, e2e_s: float, num_output: int) -> bool:
        """Did a request that finished with these timings meet every bound it has?"""
        return not self.violations(ttft_s, e2e_s, num_output)

    def violations(self, ttft_s: float, e2e_s: float, num_output: int) -> list[str]:
        out = []
        if self.ttft_ms is not None and ttft_s * 1e3 > self.ttft_ms:
            out.append(f"ttft {ttft_s * 1e3:.0f} ms > {self.ttft_ms:.0f} ms")
        tpot_s = tpot(ttft_s, e2e_s, num_output)
        if self.tpot_ms is not None and tpot_s * 1e3 > self.tpot_ms:
            out.append(f"tpot {tpot_s * 1e3:.1f} ms > {self.tpot_ms:.1f} ms")
        if self.deadline_ms is not None and e2e_s * 1e3 > self.deadline_ms:
            out.append(f"e2e {e2e_s * 1e3:.0f} ms > {self.deadline_ms:.0f} ms")
        return out


def tpot(ttft_s: float, e2e_s: float, num_output: int) -> float:
    """Mean seconds per output token after the first (0 for a one-token output)."""
    return (e2e_s - ttft_s) / (num_output - 1) if num_output > 1 else 0.0


BEST_EFFORT = SLO(best_effort=True)
