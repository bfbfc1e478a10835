"""The mode selector: each step, an option (mode and block length) for every decoding
request in auto, chosen for the whole batch at once because they share one step time.

  step_s = cost(batch tokens, batch requests);  a request's time per token = step_s / tpf
  (tpf: its tokens per forward under the option, from the acceptance estimator).

1. Start every free auto request at AR: the least device work per token.
2. Rescue, tightest first: a request whose time per token misses what its SLO needs gets
   the cheapest option that meets it, provided the longer step still meets every request
   of equal or higher priority that met before. A request no option can save even alone
   is lost: it stays at AR and nobody protects it.
3. Spare compute buys speed, tightest first: a request moves to the option that most
   raises the batch's tokens per second, if no request that meets its SLO stops meeting
   it. Under light load that is speculation (the step is overhead-bound, extra tokens are
   nearly free); under heavy load it is AR (extra tokens lengthen everyone's step).
A request keeps its current option unless another is better by `switch_gain` (switching
drops drafts). Requests mid-iteration or with a fixed mode keep theirs and count as load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from policies.acceptance import AcceptanceEstimator
from policies.cost_model import CostModel
from policies.option import AR1, CANDIDATES, Option, candidates
from policies.request_view import RequestView

INF = math.inf


@dataclass(frozen=True)
class SelectorConfig:
    safety: float = 0.85  # plan to use at most this share of the time left
    switch_gain: float = 0.03
    pool: tuple[Option, ...] = CANDIDATES


@dataclass
class _Slot:
    view: RequestView
    option: Option
    rate: float  # tokens per forward under option
    need: float  # seconds per token its SLO needs (inf: none; nan: lost)
    is_free: bool  # auto, at an iteration boundary


class ModeSelector:
    def __init__(self, cost: CostModel, acceptance: AcceptanceEstimator,
                 config: SelectorConfig = SelectorConfig()) -> None:
        self.cost, self.acceptance, self.config = cost, acceptance, config

    def select(self, decoders: Sequence[RequestView], now: float, base_tokens: int = 0,
               base_requests: int = 0, max_tokens: int | None = None) -> dict[str, Option]:
        """decoders: requests that decode this step. base_*: the rest of the batch
        (prefill chunks). Returns an option for every decoder."""
        slots = [self._slot(v, now) for v in decoders]
        self._num_requests = base_requests + len(slots)
        self._max_tokens = max_tokens if max_tokens is not None else 1 << 30
        self._tokens = base_tokens + sum(s.option.work_tokens for s in slots)
        by_urgency = sorted((s for s in slots if s.is_free), key=self._urgency(now))
        for s in by_urgency:
            self._rescue(s, slots)
        for s in by_urgency:
            self._speed_up(s, slots)
        return {s.view.id: s.option for s in slots}

    # --- per request -----------------------------------------------------------------------

    def _slot(self, v: RequestView, now: float) -> _Slot:
        is_free = v.fixed is None and not (v.is_mid_iteration and v.option is not None)
        option = AR1 if is_free else (v.option if v.is_mid_iteration else v.fixed)
        assert option is not None
        need = v.needed_time_per_token(now) * self.config.safety if v.has_slo else INF
        if need != INF and (need <= 0 or need < self._best_alone(v)):
            need = math.nan  # lost: even alone, no option makes it
        return _Slot(v, option, self._rate(v, option), need, is_free)

    def _options(self, v: RequestView) -> list[Option]:
        return candidates(v.allow_lossy, self.config.pool)

    def _rate(self, v: RequestView, option: Option) -> float:
        return self.acceptance.tokens_per_forward(option, v.id)

    def _best_alone(self, v: RequestView) -> float:
        return min(self.cost.predict(o.work_tokens, 1) / self._rate(v, o)
                   for o in self._options(v))

    def _urgency(self, now: float):  # noqa: ANN202
        def key(s: _Slot) -> tuple[float, float]:
            spare = s.view.slack(now, self.cost.predict(1, 1))
            return (-s.view.priority, spare if not math.isnan(s.need) else INF)
        return key

    @staticmethod
    def _meets(s: _Slot, step_s: float, rate: float | None = None) -> bool:
        return step_s / (rate or s.rate) <= s.need  # False for lost (nan) requests

    # --- the two passes --------------------------------------------------------------------

    def _step_with(self, s: _Slot, option: Option) -> float | None:
        tokens = self._tokens - s.option.work_tokens + option.work_tokens
        if tokens > self._max_tokens:
            return None
        return self.cost.predict(tokens, self._num_requests)

    def _cap(self, slots: list[_Slot], me: _Slot, min_priority: float) -> float:
        """The longest step that still meets every other request that meets now."""
        step_s = self.cost.predict(self._tokens, self._num_requests)
        caps = [o.need * o.rate for o in slots
                if o is not me and o.view.priority >= min_priority and self._meets(o, step_s)]
        return min(caps, default=INF)

    def _switch(self, s: _Slot, option: Option) -> None:
        self._tokens += option.work_tokens - s.option.work_tokens
        s.option, s.rate = option, self._rate(s.view, option)

    def _rescue(self, s: _Slot, slots: list[_Slot]) -> None:
        step_s = self.cost.predict(self._tokens, self._num_requests)
        if math.isnan(s.need) or self._meets(s, step_s):
            return
        cap = self._cap(slots, s, s.view.priority)
        current = [s.view.option] if s.view.option in self._options(s.view) else []
        by_work = current + sorted(self._options(s.view), key=lambda o: o.work_tokens)
        for option in by_work:
            new_step = self._step_with(s, option)
            if (new_step is not None and new_step <= cap
                    and self._meets(s, new_step, self._rate(s.view, option))):
                self._switch(s, option)
                return

    def _speed_up(self, s: _Slot, slots: list[_Slot]) -> None:
        step_s = self.cost.predict(self._tokens, self._num_requests)
        met = self._meets(s, step_s)
        cap = self._cap(slots, s, -INF)
        total = sum(o.rate for o in slots)
        best, best_value = s.option, total / step_s
        if s.option == s.view.option:
            best_value *= 1 + self.config.switch_gain  # stay unless clearly better
        for option in self._options(s.view):
            new_step = self._step_with(s, option)
            rate = self._rate(s.view, option)
            if new_step is None or new_step > cap or (met and not self._meets(s, new_step, rate)):
                continue
            value = (total - s.rate + rate) / new_step
            if option == s.view.option:
                value *= 1 + self.config.switch_gain
            if value > best_value * (1 + 1e-9):
                best, best_value = option, value
        if best != s.option:
            self._switch(s, best)
