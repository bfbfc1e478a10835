"""How many tokens each decoding option emits per forward: overall and per request.

Each estimate is a ratio of two exponentially decayed sums, tokens over forwards, started
from a prior worth `prior_forwards` forwards. Overall estimates start from the start-up
profile; a request's own estimate starts from the overall one and drifts toward what that
request achieves (code with long predictable runs accepts more than prose).

Per forward, not per iteration: linear speculation's draft pass emits nothing and its verify
pass emits accepted + 1, so the ratio is (accepted + 1) / 2 per forward; diffusion emits its
block at the commit pass after several denoise passes. AR is 1 by definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from policies.option import AR, Option


@dataclass
class RatioEstimate:
    tokens: float
    forwards: float

    @property
    def value(self) -> float:
        return self.tokens / self.forwards

    def update(self, forwards: float, tokens: float, decay: float) -> None:
        self.tokens = self.tokens * decay + tokens
        self.forwards = self.forwards * decay + forwards


class AcceptanceEstimator:
    def __init__(self, prior: Mapping[Option, float], prior_forwards: float = 20.0,
                 request_prior_forwards: float = 6.0, decay: float = 0.99,
                 request_decay: float = 0.95, default: float = 1.0) -> None:
        self.prior_forwards, self.request_prior_forwards = prior_forwards, request_prior_forwards
        self.decay, self.request_decay, self.default = decay, request_decay, default
        self.overall = {o: RatioEstimate(v * prior_forwards, prior_forwards)
                        for o, v in prior.items()}
        self.per_request: dict[str, dict[Option, RatioEstimate]] = {}

    def tokens_per_forward(self, option: Option, request_id: str | None = None) -> float:
        if option.mode == AR:
            return 1.0
        own = self.per_request.get(request_id, {}).get(option) if request_id else None
        if own is not None:
            return own.value
        overall = self.overall.get(option)
        return overall.value if overall is not None else self.default

    def observe(self, request_id: str, option: Option, forwards: int, tokens: int) -> None:
        """A request ran `forwards` forwards of `option` and emitted `tokens` tokens."""
        if option.mode == AR or forwards <= 0:
            return
        overall = self.overall.setdefault(
            option, RatioEstimate(self.default * self.prior_forwards, self.prior_forwards))
        mine = self.per_request.setdefault(request_id, {})
        if option not in mine:
            k = self.request_prior_forwards
            mine[option] = RatioEstimate(overall.value * k, k)
        overall.update(forwards, tokens, self.decay)
        mine[option].update(forwards, tokens, self.request_decay)

    def forget(self, request_id: str) -> None:
        self.per_request.pop(request_id, None)

    def snapshot(self) -> dict[str, float]:
        return {o.key: round(e.value, 3) for o, e in sorted(self.overall.items())}
