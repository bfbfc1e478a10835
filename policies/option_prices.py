"""What each option is worth to one request in a select() of the mode selector
(policies/selector.py): its tokens per forward (plain and cautious), its time per token
alone, its menu; memoised for the select, kept for the requests the decision cache holds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from policies.acceptance import AcceptanceEstimator
from policies.cost_model import CostCoefficients, CostModel
from policies.option import AR, AR1, LINEAR, PIPELINED, QUADRATIC, Option
from policies.request_view import RequestView
from policies.selector_config import SelectorConfig
from policies.selector_slot import Slot

INF = math.inf


class OptionPrices:
    """The per-request half of ModeSelector (policies/selector.py: state set there)."""

    cost: CostModel
    acceptance: AcceptanceEstimator
    config: SelectorConfig
    _alone_coef: CostCoefficients | None = None  # the fit _alone_steps were priced under
    _alone_steps: dict[Option, float]
    # The rest of the state the passes share, set by ModeSelector (its __init__ and each
    # select(): the meaning is written there); declared so that mypy checks the mixins.
    interference_s: float
    quad_horizon: float
    pool: tuple[Option, ...]
    _candidates: dict[bool, list[Option]]
    _candidate_sets: dict[bool, frozenset[Option]]
    _by_work_order: dict[bool, list[Option]]
    _searched: dict[bool, list[Option]]
    _rates: dict[str, dict[Option, float]]
    _alone: dict[str, float]
    _needs: Mapping[str, float]
    _lows: dict[tuple[str, Option], float]
    _menus: dict[str, list[tuple[Option, int, int, float]]]
    _menus_by_work: dict[str, list[tuple[Option, int, int, float]]]
    _steps: dict[tuple[int, int], float]
    _ar_alone: float
    _top_rate: dict[bool, float]
    _lost_below: dict[bool, float]
    _num_requests: int
    _now: float
    _slots: list[Slot]
    _journal: list[tuple[Slot, Option, float]]
    _version: int
    _new_version: int
    _guards_at: tuple[int, list[tuple[float, int, Slot, float]]]
    _short_at: tuple[int, list[Slot]]
    _max_tokens: int
    _tokens: int
    _draft_tokens: int
    _rate_sum: float
    _base_throughput: float

    def _slot(self, v: RequestView, now: float, held: Option | None = None) -> Slot:
        is_free = v.fixed is None and not (v.is_mid_iteration and v.option is not None)
        option = AR1 if is_free else (v.option if v.is_mid_iteration else v.fixed)
        if is_free and held is not None:
            is_free, option = False, held
        assert option is not None
        need = self._needs.get(v.id)
        if need is None:
            need = v.needed_time_per_token(now)
        safety = self.config.safety
        if need != INF:  # inf: no finish bound
            need *= safety
            # AR alone, and the option it runs alone, bound the best time alone from above:
            # no need to ask below them (is_lost's first test, inlined: every slot).
            raw = need / safety
            if need <= 0 or (raw < self._ar_alone and self.is_lost(v, raw)):
                need = math.nan  # lost: even alone, no option makes it
        rates = self._rates.get(v.id)  # _rate's memo, inlined: every slot
        rate = rates.get(option) if rates is not None else None
        return Slot(v, option, self._rate(v, option) if rate is None else rate, need, is_free)

    def _options(self, v: RequestView) -> list[Option]:
        return self._candidates[v.allow_lossy]

    def _menu(self, v: RequestView) -> list[tuple[Option, int, int, float]]:
        """(option, its work tokens, its draft tokens, v's rate under it) for each of v's
        options, in _options' order; once per request and select (the passes ask it for
        every option of every request they try: ~500k lookups a select at 64 requests)."""
        menu = self._menus.get(v.id)
        if menu is None:
            options = self._options(v)
            rates = self._rates_of(v, options)
            menu = self._menus[v.id] = [(o, o.work_tokens, o.draft_tokens, rate)
                                        for o, rate in zip(options, rates, strict=True)]
        return menu

    def _rate(self, v: RequestView, option: Option) -> float:
        rates = self._rates.get(v.id)
        if rates is None:
            rates = self._rates[v.id] = {}
        rate = rates.get(option)
        if rate is None:  # memo: asked ~10x per request and select()
            rate = rates[option] = self._prices((option,), (v,))[0]
        return rate

    def _rates_of(self, v: RequestView, options: Sequence[Option]) -> list[float]:
        """v's rate under each option, as _rate has it (and memoised as there), the missing
        ones priced in one loop: pass 2a and the rescue pass price whole menus, every
        request and select in the engine's tight steps."""
        rates = self._rates.get(v.id)
        if rates is None:
            rates = self._rates[v.id] = {}
        missing = [o for o in options if o not in rates]
        if missing:
            rates.update(zip(missing, self._prices(missing, (v,)), strict=True))
        return [rates[o] for o in options]

    def _prices(self, options: Sequence[Option], views: Sequence[RequestView]) -> list[float]:
        """Tokens per forward of each view under each option (views outer), not memoised:
        the acceptance estimate (its tokens_per_forward: the option's overall value times
        the request's factor, looked up once per view) capped by what is left to emit. One
        loop, because the uniform move prices every mover under every option (~80 x 15 a
        select at NLD-8B mixed overload: a quarter of the policy's time as _rate calls)."""
        overall, factor = self.acceptance.overall_value, self.acceptance.factor
        # Alone in the batch, a request that enters stays to its end: the stay learnt
        # (policies/entry_stay.py) is of requests re-decided beside others (NLD-8B tight:
        # ~3 forwards an entry), and its prior of 8 forwards priced quadratic out where
        # requests run one at a time and never enter it, so nothing was learnt (CPU tight
        # medium_high, 1,000 requests x 10 seeds: auto ran linear B=8 where quadratic meets,
        # 0.964x -> 1.061x the best fixed mode; BENCHMARKS.md, "Tenth session").
        horizon = self.quad_horizon if self._num_requests > 1 else INF
        out = []
        for v in views:
            remaining = v.remaining
            if remaining <= 0:
                # nothing left to emit: no option is faster than AR (no 0)
                out.extend([1.0] * len(options))
                continue
            mine = factor(v.id)
            for option in options:
                mode = option.mode
                if mode == AR:
                    out.append(1.0)
                    continue
                rate = overall(option) * mine
                if mode == LINEAR:  # an iteration is two forwards and emits <= remaining
                    rate = min(rate, remaining / 2)
                elif mode in (QUADRATIC, PIPELINED):
                    rate = min(rate, float(remaining))
                if mode == QUADRATIC and v.option != option:
                    # Entering quadratic speculation costs a plain draft pass that emits
                    # nothing: spread it over the forwards it would stay (at most
                    # `quad_horizon`).
                    stay = max(1.0, min(horizon, remaining / rate))
                    rate *= stay / (stay + 1)
                out.append(rate)
        return out

    def _rate_low(self, v: RequestView, option: Option) -> float:
        """The cautious tokens per forward, with the same caps as _rate."""
        key = (v.id, option)
        low = self._lows.get(key)
        if low is None:  # memo for this select: asked ~5x per request and option
            low = self._lows[key] = min(self.acceptance.tokens_per_forward_low(option, v.id),
                                        self._rate(v, option))
        return low

    def is_lost(self, v: RequestView, need: float) -> bool:
        """No option meets `need` seconds per token for v even alone (need < best_alone(v)),
        asked option by option until one does: AR alone and the option v runs first (the
        usual answers), the whole menu only for a lost request."""
        if need >= self._ar_alone or need >= self._alone_at(v, v.option):
            return False
        alone = self._alone.get(v.id)
        if alone is not None:
            return need < alone
        # Below every option's step alone over its most tokens per forward (caps and
        # quadratic's entry only lower a rate; AR is out: tested above), v is lost without
        # pricing its menu. The 1e-9 is far above the few ulps the two quotients may differ
        # by, so the answer is the scan's.
        if need * (1.0 + 1e-9) * self.acceptance.factor(v.id) < self._least_alone(
                v.allow_lossy) and v.remaining > 0:
            return True
        rate, alone_step = self._rate, self._alone_step
        # _alone_at over v's own options (a lost request: every one of them, every select)
        return not any(need >= alone_step(o) / rate(v, o) for o in self._options(v))

    def _least_alone(self, lossy: bool) -> float:
        """The least step alone per overall tokens per forward of any speculative option
        (a request's rate under it is at most that times its factor); once per select."""
        least = self._lost_below.get(lossy)
        if least is None:
            overall = self.acceptance.overall_value
            least = self._lost_below[lossy] = min(
                (self._alone_step(o) / overall(o) for o in self._candidates[lossy]
                 if o.mode != AR), default=INF)
        return least

    def selectable(self, v: RequestView, option: Option | None) -> bool:
        """option is one of v's options in this pool (within the block bounds)."""
        return option is not None and option in self._candidate_sets[v.allow_lossy]

    def _alone_at(self, v: RequestView, option: Option | None) -> float:
        """v's time per token alone under option if it is one of v's options, else inf."""
        if not self.selectable(v, option):
            return INF
        return self._alone_step(option) / self._rate(v, option)

    def _alone_step(self, option: Option) -> float:
        """The step of option alone under the cost fit now; kept while the fit is (asked
        for every option of a lost request's menu in every select: _slot's is_lost)."""
        coef = self.cost.coef
        if coef is not self._alone_coef:
            self._alone_coef, self._alone_steps = coef, {}
        step = self._alone_steps.get(option)
        if step is None:
            step = self._alone_steps[option] = max(coef.predict(option.work_tokens, 1),
                                                   coef.predict(option.draft_tokens, 1))
        return step

    def best_alone(self, v: RequestView) -> float:
        alone = self._alone.get(v.id)
        if alone is None:
            alone = self._alone[v.id] = min(
                max(self.cost.predict(o.work_tokens, 1), self.cost.predict(o.draft_tokens, 1))
                / self._rate(v, o) for o in self._options(v))
        return alone

    def rate_of(self, v: RequestView, option: Option) -> float:
        """v's tokens per forward under option, as the last select() priced it."""
        return self._rate(v, option)

    def may_speed_up(self, v: RequestView, total_rate: float) -> bool:
        """Whether pass 3 could move v from AR in a batch of `total_rate` tokens per
        forward: only if its best option adds min_gain of that (_speed_up's bound)."""
        return self._most_rate(v) - 1.0 > self.config.min_gain * (total_rate - 1.0)

    def _most_rate(self, v: RequestView) -> float:
        """At least v's tokens per forward under any of its options (caps only lower them)."""
        top = self._top_rate.get(v.allow_lossy)
        if top is None:
            top = self._top_rate[v.allow_lossy] = max(
                (self.acceptance.overall_value(o) for o in self._options(v)), default=1.0)
        return max(1.0, top * self.acceptance.factor(v.id))

    def _by_work(self, s: Slot) -> list[tuple[Option, int, int, float]]:
        """s's menu: its current option first (if it may keep it), then the least work
        first."""
        v = s.view
        menu = self._menus_by_work.get(v.id)
        if menu is None:
            entries = {e[0]: e for e in self._menu(v)}
            menu = [entries[o] for o in self._by_work_order[v.allow_lossy]]
            if v.option in entries:
                menu.insert(0, (v.option, *entries[v.option][1:]))
            self._menus_by_work[v.id] = menu
        return menu
