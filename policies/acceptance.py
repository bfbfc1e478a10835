"""How many tokens each decoding option emits per forward: overall and per request.

Overall, per option: a ratio of exponentially decayed sums, tokens over forwards (each
request's forwards weighted by its factor, below), started from the start-up profile with a
prior worth `prior_forwards` forwards.

Per request: one factor, how much more (or less) this request emits than the overall
estimate of the options it ran predicted, also a decayed ratio with a prior of 1. How well
drafts are accepted is mostly a property of the text (code with long predictable runs
accepts more than prose), so a request that accepts little under linear speculation is
expected to accept little under quadratic too; options it never tried are not mistaken for
better ones just because only the tried ones carry its bad news.

Blocks the profile has no trace for are priced on the mode's curve: drafts accepted in a
run, each with probability alpha, so an iteration at block B emits on average
1 + alpha + ... + alpha^(B-1) tokens; alpha is fitted per mode to the profile's traces.
A request's block is then chosen from its own factor and pace by the selector.

Counting is per iteration: forwards that emit nothing (linear's draft pass, quadratic's
first draft pass, diffusion's denoise passes) are held until the forward that emits, then
counted together, so linear speculation's (accepted + 1) / 2 per forward does not swing
between its two passes. AR is 1 by definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from policies.option import AR, LINEAR, QUADRATIC, Option

FORWARDS_PER_ITERATION = {LINEAR: 2, QUADRATIC: 1}


def expected_tokens(alpha: float, block: int) -> float:
    """1 + alpha + ... + alpha^(block-1): the mean tokens of one iteration at block."""
    return (block if alpha >= 1.0 else (1.0 - alpha ** block) / (1.0 - alpha))


def fit_alpha(points: Mapping[int, float]) -> float:
    """The alpha whose curve best fits {block: tokens per iteration} (least squares of
    relative error over a grid of 0.01)."""
    def error(a: float) -> float:
        return sum((expected_tokens(a, b) / t - 1.0) ** 2 for b, t in points.items())
    return min((i / 100 for i in range(1, 100)), key=error)


@dataclass
class RatioEstimate:
    num: float
    den: float
    value: float = field(init=False)  # num / den, kept: read ~130 times a choose

    def __post_init__(self) -> None:
        self.value = self.num / self.den

    def update(self, den: float, num: float, decay: float) -> None:
        self.num = self.num * decay + num
        self.den = self.den * decay + den
        self.value = self.num / self.den


class AcceptanceEstimator:
    def __init__(self, prior: Mapping[Option, float], prior_forwards: float = 20.0,
                 request_prior_tokens: float = 6.0, decay: float = 0.99,
                 request_decay: float = 0.9, default: float = 1.0,
                 factor_bounds: tuple[float, float] = (0.3, 3.0), low_factor: float = 0.5,
                 low_weight: float = 8.0) -> None:
        self.prior_forwards, self.request_prior_tokens = prior_forwards, request_prior_tokens
        self.decay, self.request_decay, self.default = decay, request_decay, default
        self.factor_bounds = factor_bounds
        self.low_factor, self.low_weight = low_factor, low_weight
        self.prior = dict(prior)  # the start-up profile's, kept for admission's trials
        self.overall = {o: RatioEstimate(v * prior_forwards, prior_forwards)
                        for o, v in prior.items()}
        self.factors: dict[str, RatioEstimate] = {}  # observed tokens / expected tokens
        self._held: dict[tuple[str, Option], int] = {}  # forwards that emitted nothing yet
        self.mode_alpha = {m: fit_alpha({o.block: v * f for o, v in prior.items()
                                         if o.mode == m})
                           for m, f in FORWARDS_PER_ITERATION.items()
                           if any(o.mode == m for o in prior)}

    def overall_value(self, option: Option) -> float:
        if option.mode == AR:
            return 1.0
        est = self.overall.get(option)
        if est is not None:
            return est.value
        return self.prior_value(option)

    def prior_value(self, option: Option) -> float:
        """The start-up estimate, before any evidence: the profile's value, or the mode's
        curve for a block it has no trace for."""
        if option.mode == AR:
            return 1.0
        if option in self.prior:
            return self.prior[option]
        alpha = self.mode_alpha.get(option.mode)
        if alpha is None:
            return self.default
        return expected_tokens(alpha, option.block) / FORWARDS_PER_ITERATION[option.mode]

    def factor(self, request_id: str | None) -> float:
        est = self.factors.get(request_id) if request_id is not None else None
        if est is None:
            return 1.0
        lo, hi = self.factor_bounds
        return min(hi, max(lo, est.value))

    def tokens_per_forward(self, option: Option, request_id: str | None = None) -> float:
        if option.mode == AR:
            return 1.0
        return self.overall_value(option) * self.factor(request_id)

    def tokens_per_forward_low(self, option: Option, request_id: str | None = None) -> float:
        """A cautious estimate: the request's factor pulled toward a bad one
        (`low_factor`) by `low_weight` expected tokens of pretend evidence, which its own
        evidence outweighs as it accumulates."""
        if option.mode == AR:
            return 1.0
        est = self.factors.get(request_id) if request_id is not None else None
        num, den = (est.num, est.den) if est is not None else (0.0, 0.0)
        k = self.low_weight
        factor = (num + k * self.low_factor) / (den + k)
        return self.overall_value(option) * min(factor, self.factor(request_id))

    def observe(self, request_id: str, option: Option, forwards: int, tokens: int) -> None:
        """A request ran `forwards` forwards of `option` and they emitted `tokens` tokens."""
        if option.mode == AR or forwards <= 0:
            return
        key = (request_id, option)
        if tokens <= 0:
            self._held[key] = self._held.get(key, 0) + forwards
            return
        forwards += self._held.pop(key, 0)
        # The overall estimate learns from tokens over forwards scaled by the request's own
        # factor: auto runs long blocks mostly for requests that accept well, and without
        # this the overall value of those options would drift up with that selection.
        factor = self.factor(request_id)
        overall = self.overall.setdefault(
            option, RatioEstimate(self.default * self.prior_forwards, self.prior_forwards))
        expected = overall.value * forwards
        k = self.request_prior_tokens
        mine = self.factors.setdefault(request_id, RatioEstimate(k, k))
        mine.update(expected, tokens, self.request_decay)
        overall.update(forwards * factor, tokens, self.decay)

    def forget(self, request_id: str) -> None:
        self.factors.pop(request_id, None)
        for key in [k for k in self._held if k[0] == request_id]:
            del self._held[key]

    def snapshot(self) -> dict[str, float]:
        return {o.key: round(e.value, 3) for o, e in sorted(self.overall.items())}
