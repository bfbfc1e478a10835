"""Decisions kept across steps: the mode selector re-decides a request only when something
its option depends on has moved, so that a step costs O(requests that changed), not
O(requests x options) (policies/selector.py decides; this module decides *when*).

A request's option is kept (held: it counts as load and is guarded like any other, but is
not re-chosen) while its verdict says so (policies/kept_choice.py: what it was chosen on,
and the bands it may move by).
The others (new ones included) are chosen for with the held ones counted as load; when one
of them needs speculation (`joint_search`: a TPOT bound or a need below AR alone), so are
all that do, since the selector's search for the most requests met is a joint one (chosen
one at a time, H200 tight medium lost 0.04 attainment against a full re-plan). A held
request that this leaves unmet is chosen for too; and (`strict`) if it leaves a request
unmet that is new or was met before and could be met alone, every request held at a
speculative option is chosen for too (it may need their spare compute: without this rule
the all-tight workload lost 0.03 attainment at high load, H200 profile, 3 seeds). Everybody
is chosen for together (a full re-plan: select() without the cache) when the step the held
options make moved by more than `step_band` under the cost fit and prefill interference of
now against the last full re-plan's, when more than `max_dirty_share` of the batch changed,
when the held options' work exceeds the step's token budget, or when three rounds of the
above still break a held request.

tests/policies/test_decision_cache.py compares this with a full re-plan every step on
random evolving batches; bench/slo_selector_cost.py measures both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from policies.acceptance import AcceptanceEstimator
from policies.cost_model import CostCoefficients, CostModel
from policies.kept_choice import CHANGE, KEEP, Bands, CacheConfig, Kept, remaining_band, verdict
from policies.option import AR, Option
from policies.request_view import RequestView
from policies.rescue_memo import BatchAfter, FailedAt
from policies.selector import ModeSelector

INF = math.inf
DEFAULT_CACHE = CacheConfig()


class DecisionCache:
    def __init__(self, selector: ModeSelector, config: CacheConfig = DEFAULT_CACHE) -> None:
        self.selector, self.config = selector, config
        self.cost: CostModel = selector.cost
        self.acceptance: AcceptanceEstimator = selector.acceptance
        self.kept: dict[str, Kept] = {}
        self.num_selects = self.num_full = self.num_partial = self.num_rechosen = 0
        self._coef: CostCoefficients | None = None  # the cost fit of the last full re-plan
        self._interference = 0.0  # and the prefill interference then
        self._step_ref = 0.0  # and the step it predicted
        self._last_step = 0.0  # the step the last select predicted
        self._num_decoders = 0  # in this select's batch
        self._after: BatchAfter | None = None  # the last select's outcome
        # The last select's (now, step, decoders, options, needs) when no request was chosen
        # for and the selector was not asked (_unchanged); None when it was.
        self._steady: tuple[float, float, Sequence[RequestView], dict[str, Option],
                            dict[str, float]] | None = None

    def select(self, decoders: Sequence[RequestView], now: float,
               max_tokens: int | None = None) -> dict[str, Option]:
        self.num_selects += 1
        self._num_decoders = len(decoders)
        self._steady = None
        if not self.config.enabled:
            return self.selector.select(decoders, now, max_tokens)
        held, changed, needs = self._held(decoders, now)
        if self._coef is None or not self._same_steps(held):
            return self._full(decoders, now, max_tokens, needs)
        if not changed:
            options = self._unchanged(decoders, now, held, needs, max_tokens)
            if options is not None:
                self.num_partial += 1
                return options
        if self.config.joint_search:
            self._join_search(decoders, held, changed, needs)
        released = False
        for _attempt in range(3):
            if len(changed) > self.config.max_dirty_share * len(decoders):
                return self._full(decoders, now, max_tokens, needs)
            options = self.selector.select(decoders, now, max_tokens, held, needs)
            if max_tokens is not None and self.selector.num_tokens() > max_tokens:
                return self._full(decoders, now, max_tokens, needs)  # held work over budget
            paces = self.selector.paces()
            out = {k for k in held if self.kept[k].was_met and not paces[k][2]}  # broken
            if not out and self.config.strict and not released and self._starved(
                    changed, paces, needs):
                # It may need others' spare compute: those held at speculation start over.
                out, released = {k for k, o in held.items() if o.mode != AR}, True
            if not out:
                break
            changed += [v for v in decoders if v.id in out]
            held = {k: o for k, o in held.items() if k not in out}
        else:
            return self._full(decoders, now, max_tokens, needs)  # still breaks a kept one
        self.num_partial += 1
        self.num_rechosen += len(changed)
        self._last_step = self.selector.step_s()
        self._remember(changed, options, paces, needs)
        return options

    def _unchanged(self, decoders: Sequence[RequestView], now: float, held: dict[str, Option],
                   needs: dict[str, float], max_tokens: int | None) -> dict[str, Option] | None:
        """Nobody to choose for: the options the selector would return (the held ones, and
        the pinned ones of requests not the selector's to choose), computed without it; None
        if a held request that met its pace no longer does or the work is over budget (the
        selector decides then). The selector's outcome (_after) stays the last select's."""
        options: dict[str, Option] = {}
        tokens = draft = 0
        for v in decoders:
            option = held.get(v.id)
            if option is None:  # pinned (a fixed mode, or mid-iteration): as _slot says
                option = v.option if v.is_mid_iteration else v.fixed
                if option is None:
                    return None
            options[v.id] = option
            tokens += option.work_tokens
            draft += option.draft_tokens
        if max_tokens is not None and tokens > max_tokens:
            return None
        n = len(decoders)
        step = (max(self.cost.predict(tokens, n), self.cost.predict(draft, n))
                + self.selector.interference_s)
        safety, kept = self.selector.config.safety, self.kept
        for k in held:
            e = kept[k]  # its rate under its option is the one it was chosen on (kept.tpf)
            if e.was_met and not step / e.tpf <= needs[k] * safety:
                return None
        self._last_step = step
        self._steady = (now, step, decoders, options, needs)
        return options

    def paces(self) -> dict[str, tuple[float, float, bool]]:
        """The last select's (seconds per token, tokens per forward, met with the margin)
        per request, as ModeSelector.paces()."""
        if self._steady is None:
            return self.selector.paces()
        now, step, decoders, options, needs = self._steady
        safety, out = self.selector.config.safety, {}
        for v in decoders:
            e = self.kept.get(v.id)
            rate = e.tpf if e is not None and v.id in needs else self.selector.rate_of(
                v, options[v.id])
            need = needs.get(v.id)
            if need is None:
                need = v.needed_time_per_token(now)
            out[v.id] = (step / rate, rate, need == INF or step / rate <= need * safety)
        return out

    def _outcome(self) -> BatchAfter:
        self._after = BatchAfter(self.selector.step_s(), self.selector.throughput(),
                                 self.selector.guards())
        return self._after

    def _join_search(self, decoders: Sequence[RequestView], held: dict[str, Option],
                     changed: list[RequestView], needs: dict[str, float]) -> None:
        """The selector chooses for speculation-only requests (slower than AR alone is too
        slow: by their TPOT bound or their need now) in one joint search
        (ModeSelector._meet_most): when one of them is chosen for, all are."""
        alone, kept_all, up = self.cost.predict(1, 1), self.kept, 1.0 + self.config.need_band

        def only(v: RequestView) -> bool:
            return v.slo.tpot_below(alone) or needs[v.id] < alone

        def lost(v: RequestView) -> bool:
            # Lost when kept at AR, and its need has not grown since (by `need_band`, as
            # the verdict's): no option meets it even alone, so the search leaves it out
            # (ModeSelector._meet_most searches only hopeful requests). Rechosen with the
            # others, lost ones were most of a tight batch's work (bench/slo_selector_cost.py
            # tight at 64: 1617 of 1836 releases). One kept at speculation is released: a
            # re-plan starts it at AR, and held there it took the hopeful ones' compute
            # (H200 tight high, 3 seeds: goodput 21.77 -> 19.45).
            kept = kept_all.get(v.id)
            return (kept is not None and kept.is_lost and kept.option.mode == AR
                    and not needs[v.id] > kept.need * up)

        if not any(only(v) and not lost(v) for v in changed):
            return
        for v in decoders:
            if v.id not in held:
                continue
            tpot = v.slo.tpot_ms  # only(v), inlined: asked of every held request
            if ((tpot is not None and tpot / 1e3 < alone) or needs[v.id] < alone) and not lost(v):
                del held[v.id]
                changed.append(v)

    def _starved(self, changed: list[RequestView], paces: dict[str, tuple[float, float, bool]],
                 needs: dict[str, float]) -> bool:
        """Some request chosen for is unmet, new or met before, and could be met alone."""
        for v in changed:
            kept, need = self.kept.get(v.id), needs[v.id]
            if not paces[v.id][2] and need != INF and (kept is None or kept.was_met) and not (
                    need <= 0 or self.selector.is_lost(v, need)):
                return True
        return False

    def forget(self, request_id: str) -> None:
        self.kept.pop(request_id, None)

    # --- who changed -----------------------------------------------------------------------

    def _held(self, decoders: Sequence[RequestView], now: float
              ) -> tuple[dict[str, Option], list[RequestView], dict[str, float]]:
        """The kept options still valid, the free requests to choose for, and every free
        request's needed seconds per token now."""
        kept_all = self.kept
        held: dict[str, Option] = {}
        changed: list[RequestView] = []
        needs: dict[str, float] = {}
        bands = self._bands(len(decoders))
        maybe: list[tuple[RequestView, Option]] = []  # met at AR; batch shrank or slack grew
        rate_total = 0.0  # the batch's tokens per forward, about (new and pinned ones at 1)
        for v in decoders:
            if v.fixed is not None or (v.is_mid_iteration and v.option is not None):
                rate_total += 1.0
                continue  # not the selector's to choose this step
            kept = kept_all.get(v.id)
            if kept is None:
                rate_total += 1.0
                needs[v.id] = v.needed_time_per_token(now)
                changed.append(v)
                continue
            rate_total += kept.tpf
            remaining = v.max_tokens - v.num_output
            # The finish deadline is fixed once a request decodes (RequestView.finish_deadline).
            need = needs[v.id] = (kept.due - now) / remaining if (
                kept.due != INF and remaining > 0) else INF
            answer = verdict(v, kept, need, remaining, bands)
            if answer is KEEP:
                held[v.id] = kept.option
            elif answer is CHANGE:
                changed.append(v)
            else:
                maybe.append((v, kept.option))
        for v, option in maybe:
            # Met (or lost) at the least work already, a smaller batch or more slack can only
            # buy it speed (pass 3), and only where one request can move the batch's tokens
            # per second by min_gain.
            if self.selector.may_speed_up(v, rate_total):
                changed.append(v)
            else:
                held[v.id] = option
        return held, changed, needs

    def _bands(self, num: int) -> Bands:
        """What _held compares every kept request against in this select."""
        cfg = self.config
        return Bands(self.num_selects - cfg.max_age_steps, cfg.loose_steps * self._step_ref,
                     1.0 + cfg.need_band, (1.0 + cfg.step_band) / self.selector.config.safety,
                     cfg.tpf_band, num, cfg.step_band * num, self._after, cfg.fail_band,
                     self.cost.predict(1, 1), self.acceptance.tokens_per_forward)

    def _same_steps(self, held: dict[str, Option]) -> bool:
        """The held batch's step under the cost fit and prefill interference now is within
        `step_band` of what the last full re-plan's fit predicted for it."""
        assert self._coef is not None
        tokens = sum([o.work_tokens for o in held.values()]) or 1
        n = max(1, len(held))
        now_s = self.cost.predict(tokens, n) + self.selector.interference_s
        then_s = self._coef.predict(tokens, n) + self._interference
        return abs(now_s - then_s) <= self.config.step_band * then_s

    # --- bookkeeping -----------------------------------------------------------------------

    def _full(self, decoders: Sequence[RequestView], now: float, max_tokens: int | None,
              needs: dict[str, float]) -> dict[str, Option]:
        self.num_full += 1
        options = self.selector.select(decoders, now, max_tokens, needs=needs)
        free = [v for v in decoders
                if v.fixed is None and not (v.is_mid_iteration and v.option is not None)]
        self.num_rechosen += len(free)
        self._coef = self.cost.coef
        self._interference = self.selector.interference_s
        self._step_ref = self._last_step = self.selector.step_s()
        self._remember(free, options, self.selector.paces(), needs)
        return options

    def _remember(self, chosen: list[RequestView], options: dict[str, Option],
                  paces: dict[str, tuple[float, float, bool]], needs: dict[str, float]) -> None:
        loose = self.config.loose_steps * self._step_ref
        after = self._outcome()
        memo = self.config.fail_band > 0
        if self.num_selects % self.config.max_age_steps == 0:  # drop the ones gone
            oldest = self.num_selects - self.config.max_age_steps
            self.kept = {k: e for k, e in self.kept.items() if e.chosen_at > oldest}
        for v in chosen:
            need, option = needs[v.id], options[v.id]
            pace, tpf, met = paces[v.id]
            lost = need != INF and (need <= 0 or self.selector.is_lost(v, need))
            # (Speculation-only requests are chosen for together, by pass 2a's search: when
            # one of them is, _join_search releases those held by their failure too.)
            failed = FailedAt.of(need, after, v.id, v.priority, option.mode == AR) if (
                memo and not (met or lost)) else None
            self.kept[v.id] = Kept(option, v.finish_deadline, need, need >= loose, tpf, pace,
                                    self._num_decoders,
                                    remaining_band(v.remaining, option), self.num_selects, met,
                                    lost, failed)
