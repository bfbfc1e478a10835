"""How many tokens each decoding option emits per forward: overall and per request.

Overall, per option: a ratio of exponentially decayed sums, tokens over forwards, started
from the start-up profile with a prior worth `prior_forwards` forwards.

Per request: one factor, how much more (or less) this request emits than the overall
estimate of the options it ran predicted, also a decayed ratio with a prior of 1. How well
drafts are accepted is mostly a property of the text (code with long predictable runs
accepts more than prose), so a request that accepts little under linear speculation is
expected to accept little under quadratic too; options it never tried are not mistaken for
better ones just because only the tried ones carry its bad news.

Counting is per iteration: forwards that emit nothing (linear's draft pass, quadratic's
first draft pass, diffusion's denoise passes) are held until the forward that emits, then
counted together, so linear speculation's (accepted + 1) / 2 per forward does not swing
between its two passes. AR is 1 by definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from policies.option import AR, Option


@dataclass
class RatioEstimate:
    num: float
    den: float

    @property
    def value(self) -> float:
        return self.num / self.den

    def update(self, den: float, num: float, decay: float) -> None:
        self.num = self.num * decay + num
        self.den = self.den * decay + den


class AcceptanceEstimator:
    def __init__(self, prior: Mapping[Option, float], prior_forwards: float = 20.0,
                 request_prior_tokens: float = 6.0, decay: float = 0.99,
                 request_decay: float = 0.9, default: float = 1.0,
                 factor_bounds: tuple[float, float] = (0.3, 3.0)) -> None:
        self.prior_forwards, self.request_prior_tokens = prior_forwards, request_prior_tokens
        self.decay, self.request_decay, self.default = decay, request_decay, default
        self.factor_bounds = factor_bounds
        self.overall = {o: RatioEstimate(v * prior_forwards, prior_forwards)
                        for o, v in prior.items()}
        self.factors: dict[str, RatioEstimate] = {}  # observed tokens / expected tokens
        self._held: dict[tuple[str, Option], int] = {}  # forwards that emitted nothing yet

    def overall_value(self, option: Option) -> float:
        if option.mode == AR:
            return 1.0
        est = self.overall.get(option)
        return est.value if est is not None else self.default

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

    def observe(self, request_id: str, option: Option, forwards: int, tokens: int) -> None:
        """A request ran `forwards` forwards of `option` and they emitted `tokens` tokens."""
        if option.mode == AR or forwards <= 0:
            return
        key = (request_id, option)
        if tokens <= 0:
            self._held[key] = self._held.get(key, 0) + forwards
            return
        forwards += self._held.pop(key, 0)
        expected = self.overall_value(option) * forwards
        k = self.request_prior_tokens
        mine = self.factors.setdefault(request_id, RatioEstimate(k, k))
        mine.update(expected, tokens, self.request_decay)
        overall = self.overall.setdefault(
            option, RatioEstimate(self.default * self.prior_forwards, self.prior_forwards))
        overall.update(forwards, tokens, self.decay)

    def forget(self, request_id: str) -> None:
        self.factors.pop(request_id, None)
        for key in [k for k in self._held if k[0] == request_id]:
            del self._held[key]

    def snapshot(self) -> dict[str, float]:
        return {o.key: round(e.value, 3) for o, e in sorted(self.overall.items())}
