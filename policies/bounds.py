"""What auto may choose per request, within bounds from the config: the block length of
each speculative / diffusion mode (policies/selector.py picks one per request from its own
acceptance and pace) and the diffusion commit threshold (chosen here).

The threshold: block diffusion commits every masked position whose confidence reaches it
(engine/modes/diffusion.py). On text the model is sure of (the request's own acceptance is
high: its drafts match what AR would say) most positions clear a strict threshold in the
first passes anyway, so a strict one buys fidelity at little cost; on text it is unsure of a
strict threshold commits about one position a pass, and a looser one keeps the request's
tokens per forward up. So an auto request's threshold moves with its acceptance factor
(policies/acceptance.py: its tokens per forward over what the overall estimate predicted),
from the lower bound at `factor_lo` or below to the upper bound at `factor_hi` or above. A
request that asked for diffusion itself keeps the threshold it asked for.
"""

from __future__ import annotations

from policies.modes import CONCRETE_MODES, Mode

FACTOR_LO, FACTOR_HI = 0.5, 1.5


class BoundsError(ValueError):
    """A bound in the policy's config is out of range; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def check_block_bounds(bounds: tuple[tuple[str, int, int], ...],
                       field: str = "block_bounds") -> None:
    seen = set()
    for i, (mode, lo, hi) in enumerate(bounds):
        where = f"{field}[{i}]"
        if mode not in CONCRETE_MODES or Mode(mode) is Mode.AR:
            raise BoundsError(where, f"{mode!r} is not a mode with blocks")
        if mode in seen:
            raise BoundsError(where, f"{mode} is bounded twice")
        seen.add(mode)
        if not 2 <= lo <= hi <= 64:
            raise BoundsError(where, f"needs 2 <= lo <= hi <= 64, got ({lo}, {hi})")


def check_threshold_bounds(bounds: tuple[float, float],
                           field: str = "threshold_bounds") -> None:
    lo, hi = bounds
    if not 0.0 < lo <= hi <= 1.0:
        raise BoundsError(field, f"needs 0 < lo <= hi <= 1, got ({lo}, {hi})")


def choose_threshold(factor: float, bounds: tuple[float, float]) -> float:
    """The commit threshold for a request whose acceptance factor is `factor`, rounded to
    0.01 (it is reported per request)."""
    lo, hi = bounds
    share = min(1.0, max(0.0, (factor - FACTOR_LO) / (FACTOR_HI - FACTOR_LO)))
    return min(hi, max(lo, round(lo + (hi - lo) * share, 2)))
