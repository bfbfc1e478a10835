"""The load at which one replica starts to miss its SLOs, learned from what its own finished
requests measured: before it misses, not after.

A finished request's SLO usage is its measured latency over its objective, the worst of its
kinds (TTFT / TPOT / end to end): 0.4 = it used 40 % of what it was allowed, above 1 = a miss.
On a replica, usage grows with the load it carries (a bigger batch is a slower step, more
streams share its event loop): `usage ~ base + slope * load`, fitted by weighted least squares
over (load, mean usage) samples with an exponential memory in time (half of a sample's weight
is gone after `half_life_s`: a memory counted in requests would be 2 s at 25 requests/s on a
quiet box and a minute on a crowded one), so the fit follows a replica whose speed changes.
Its capacity is the load at which the fitted line reaches usage 1.0.

With too narrow a spread of loads to see a slope, the line goes through the origin (usage
proportional to load): that under-states capacity (base > 0 in truth), the safe side for
scaling up. A slope that is not positive (usage does not grow with load, or noise) says
nothing about where misses start: no capacity until it does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_SPREAD = 1.0  # load's weighted standard deviation needed to trust a fitted slope
MIN_WEIGHT = 4.0  # requests seen before any capacity is reported


@dataclass(frozen=True)
class CapacityFit:
    """Weighted sums of (load, usage) samples; `observe` returns the updated fit."""

    half_life_s: float = 30.0
    w: float = 0.0
    sl: float = 0.0  # sum w * load
    su: float = 0.0  # sum w * usage
    sll: float = 0.0
    slu: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.half_life_s) or self.half_life_s <= 0:
            raise ValueError(f"half_life_s: {self.half_life_s} (a finite number > 0)")
        if any(not math.isfinite(v) for v in (self.w, self.sl, self.su, self.sll, self.slu)):
            raise ValueError("CapacityFit: sums must be finite")

    def observe(self, load: float, usage: float, weight: float = 1.0,
                elapsed_s: float = 1.0) -> CapacityFit:
        """`weight` requests finished at mean `usage` over the last `elapsed_s` seconds while
        the replica carried `load`."""
        values = (load, usage, weight, elapsed_s)
        if not all(math.isfinite(v) and v >= 0 for v in values) or weight <= 0:
            raise ValueError(f"observe: load {load}, usage {usage}, weight {weight}, "
                             f"elapsed_s {elapsed_s} (finite, >= 0, weight > 0)")
        keep = 0.5 ** (elapsed_s / self.half_life_s)
        return CapacityFit(self.half_life_s, keep * self.w + weight,
                           keep * self.sl + weight * load, keep * self.su + weight * usage,
                           keep * self.sll + weight * load * load,
                           keep * self.slu + weight * load * usage)

    def line(self) -> tuple[float, float] | None:
        """(base, slope) of usage against load, or None while nothing can be said."""
        if self.w < MIN_WEIGHT:
            return None
        mean_l, mean_u = self.sl / self.w, self.su / self.w
        var_l = self.sll / self.w - mean_l * mean_l
        if var_l >= MIN_SPREAD ** 2:
            slope = (self.slu / self.w - mean_l * mean_u) / var_l
            base = mean_u - slope * mean_l
            if base < 0:  # misses do not come before any load: pin the line at the origin
                base, slope = 0.0, mean_u / mean_l
        elif mean_l > 0:
            base, slope = 0.0, mean_u / mean_l
        else:
            return None
        return (base, slope) if slope > 0 else None

    def capacity(self, usage: float = 1.0) -> float | None:
        """The load at which the mean request is predicted to use `usage` of its SLO (1.0:
        it starts to miss); at least 1 (one request alone is always carried); None while
        unknown."""
        fit = self.line()
        if fit is None:
            return None
        base, slope = fit
        return max(1.0, (usage - base) / slope)
