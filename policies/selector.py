"""The mode selector: each step, an option (mode and block length) for every decoding
request in auto, chosen for the whole batch at once because they share one step time.

  step_s = cost(batch tokens, batch requests);  a request's time per token = step_s / tpf
  (tpf: its tokens per forward under the option, from the acceptance estimator).

1. Start every free auto request at AR: the least device work per token.
2a. Requests whose TPOT bound AR misses even alone (or who fell that far behind): one search
   for the options that maximise the requests *expected* to meet their SLO by the end
   (policies/expected_met.py), started from the best single option for all of them (what a
   fixed mode runs), so that it never expects fewer met than that fixed mode.
2. Rescue, tightest first: a request whose time per token misses what its SLO needs gets
   the cheapest option that meets it, provided every request of equal or higher priority
   that met before still meets; a request that the longer step would break may itself be
   rescued in turn (two interactive requests can often both be saved, but neither alone
   without breaking the other). A request no option saves even alone is lost: it stays at
   AR and nobody protects it. Rescues cost the batch at most `rescue_loss` of its tokens
   per second unless every other request has slack to give.
3. Spare compute buys speed: first one option for every free request at AR, where all of
   them together raise the batch's tokens per second by at least `min_gain` (unless a
   request of pass 2a's kind runs: those have the extra work first); then, tightest first,
   a request moves to the option that raises it by at least `min_gain`. Either way no
   request outside pass 2a's kind may be pushed past `spare_margin` of its limit. Under
   light load that is speculation (the step is overhead-bound, extra tokens are nearly
   free); under heavy load it is AR (extra tokens lengthen everyone's step), or on a
   device where a long chunk costs about a one-token step, speculation for all at once.
Decisions are made for the steady-state batch of decoders plus the mean time that prefill
chunks of arriving requests add to a step (`interference_s`, measured): this step's own
prefill chunks come and go and only limit its token budget. A
request keeps its current option unless another is better by `switch_gain` (switching drops
drafts). Requests mid-iteration or with a fixed mode keep theirs and count as load.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policies.acceptance import FORWARDS_PER_ITERATION, AcceptanceEstimator
from policies.bounds import check_block_bounds, check_threshold_bounds
from policies.cost_model import CostModel
from policies.expected_met import Pace, Request, most_expected, spread_of
from policies.meet_most import Menu, meet_most
from policies.option import AR1, DIFFUSION, LINEAR, PIPELINED, QUADRATIC, Option, candidates
from policies.preemption import slack_of
from policies.request_view import RequestView
from policies.slo import SAFETY

INF = math.inf
QUAD_HORIZON = 8.0  # forwards per quadratic entry before any is measured
# What auto chooses among: every block of each mode within `block_bounds` that the profile
# has acceptance for (so the simulator replays real iterations for it), and options of
# modes without bounds (pipelined, where a deployment adds it) that have a prior; each
# request's block comes from its own acceptance and pace: the cheapest option that meets
# it, or the one that buys the most throughput. Long blocks pay where a chunk of tens of
# tokens costs about a one-token step (a GPU near the bandwidth bound:
# bench/profiles/roofline-h200-llama8b.json); on the CPU profile the cost model prices them
# out.
LADDER = (AR1, *(Option(LINEAR, b) for b in (2, 3, 4, 6, 8, 12, 16)),
          *(Option(QUADRATIC, b) for b in (2, 3, 4, 5, 6, 8)),
          *(Option(DIFFUSION, b) for b in (8, 16)))
BLOCK_BOUNDS = ((LINEAR, 4, 8), (QUADRATIC, 2, 6), (DIFFUSION, 8, 16))
THRESHOLD_BOUNDS = (0.7, 0.95)


@dataclass(frozen=True)
class SelectorConfig:
    safety: float = SAFETY  # plan to use at most this share of the time left
    switch_gain: float = 0.03  # keep the current option unless another is this much better
    min_gain: float = 0.10  # spare compute buys speed only for this much more throughput
    # Pass 3 buys speed only with compute beyond a margin: the step may grow to this share
    # of the longest that keeps every request within its limit (at its limit a request
    # has even odds; speculating up to it made met requests miss later: CPU interactive
    # medium_high 0.95x AR -> 1.00x at 0.6, BENCHMARKS.md, "fourth session").
    spare_margin: float = 0.7
    uniform_speed_up: bool = True  # pass 3 first tries one option for every free request
    off_track_slip: float = 0.1  # others may slow a request that is off track by this share
    # Rescues may lower the batch's predicted tokens per second (against all-AR, summed
    # over the step's rescues) by more than `rescue_loss` only while every other request
    # has `rescue_slack_steps` steps of slack: spare compute. Without this rule, speculating
    # for requests at risk slowed every other one and more missed than were saved
    # (simulator, bench/slo_profile.json, goodput against SLO-scheduled AR: interactive-only
    # medium_high 0.85x -> 0.97x, batch-only overload 0.69x -> 1.02x, mixed medium_high
    # 1.09x -> 1.05x). At 0.03 instead of 0 the same spiral remained near capacity
    # (interactive overload, H200 roofline 0.86x, CPU 0.96x the best fixed mode; at 0:
    # 1.01x / 1.03x; BENCHMARKS.md > SLO scheduling, "Rescues that cost throughput").
    rescue_loss: float = 0.0
    # Pass 2a (requests whose bound only speculation meets) may cost the batch this much:
    # they have no cheaper way to be met, and a fixed speculative mode would cost more.
    tight_loss: float = 0.03
    rescue_slack_steps: float = 20.0
    max_rescued: int = 3  # a rescue may re-rescue at most this many requests it broke
    pool: tuple[Option, ...] = LADDER
    block_bounds: tuple[tuple[str, int, int], ...] = BLOCK_BOUNDS  # (mode, lo, hi)
    # The diffusion commit threshold of auto requests, chosen per request from its own
    # acceptance within these (policies/bounds.py).
    threshold_bounds: tuple[float, float] = THRESHOLD_BOUNDS
    meet_most: bool = True  # pass 2 as one search for the most requests met (else rescues)
    uniform: bool = True  # pass 2's search starts from one option for all of them
    # Pass 2's objective: "expected" requests met by the end (policies/expected_met.py) or
    # "meet_most" this step (policies/meet_most.py).
    objective: str = "expected"
    iteration_cv: float = 0.5  # relative spread of one iteration's tokens
    spread_floor: float = 0.05  # of any pace: step-time noise, estimate error
    search_by_bound: bool = True  # pass 2 takes every request whose TPOT bound AR misses
    same_mode: bool = True  # pass 2's upgrades stay in the uniform start's mode

    def __post_init__(self) -> None:
        check_block_bounds(self.block_bounds, "SelectorConfig.block_bounds")
        check_threshold_bounds(self.threshold_bounds, "SelectorConfig.threshold_bounds")


@dataclass(frozen=True)
class _Guarded:
    """The requests a change to s must not break: every one but s of at least
    min_priority, from the selector's guards (cap, index, slot, limit), shortest cap first."""

    guards: list[tuple[float, int, _Slot, float]]
    but: _Slot
    min_priority: float


@dataclass(eq=False, slots=True)  # identity: a slot is one request in one select()
class _Slot:
    view: RequestView
    option: Option
    rate: float  # tokens per forward under option
    need: float  # seconds per token its SLO needs, with the safety margin (inf: none; nan: lost)
    is_free: bool  # auto, at an iteration boundary
    searched: bool = False  # its option came from pass 2's search: no rescue


class ModeSelector:
    def __init__(self, cost: CostModel, acceptance: AcceptanceEstimator,
                 config: SelectorConfig = SelectorConfig()) -> None:
        self.cost, self.acceptance, self.config = cost, acceptance, config
        self.interference_s = 0.0  # mean time prefill chunks add to a step (set by the policy)
        # Forwards a request stays in quadratic speculation per entry (set by the policy
        # from what it measures: policies/entry_stay.py).
        self.quad_horizon = QUAD_HORIZON
        # Per request: its tokens per forward by option, and its best time per token alone.
        # Rebuilt every select() for the requests it decides; kept for the ones it holds
        # (policies/decision_cache.py keeps their decisions, and with them these numbers).
        self._rates: dict[str, dict[Option, float]] = {}
        self._alone: dict[str, float] = {}
        bounds = {m: (lo, hi) for m, lo, hi in config.block_bounds}
        self.pool = tuple(o for o in config.pool if o == AR1 or (
            o in acceptance.overall and (o.mode not in bounds
                                         or bounds[o.mode][0] <= o.block <= bounds[o.mode][1])))
        self._candidates = {lossy: candidates(lossy, self.pool) for lossy in (False, True)}
        self._candidate_sets = {lossy: frozenset(c) for lossy, c in self._candidates.items()}
        self._by_work_order = {lossy: sorted(c, key=lambda o: o.work_tokens)
                               for lossy, c in self._candidates.items()}
        # A new number for every state of the batch's options (a switch, a select); an undo
        # goes back to the number of the state it restores: what _guards and _short keep.
        self._version = self._new_version = 0
        self._guards_at: tuple[int, list[tuple[float, int, _Slot, float]]] = (-1, [])
        self._short_at: tuple[int, list[_Slot]] = (-1, [])

    def select(self, decoders: Sequence[RequestView], now: float,
               max_tokens: int | None = None,
               held: Mapping[str, Option] | None = None,
               needs: Mapping[str, float] | None = None) -> dict[str, Option]:
        """An option for every decoder; their work must fit in max_tokens. `held`: requests
        whose option is kept from an earlier select (they count as load and are guarded like
        any other, but are not re-decided; their rates are the ones they were decided on).
        `needs`: each request's needed_time_per_token(now), where the caller has it."""
        held = held or {}
        self._needs = needs or {}
        self._rates = {k: r for k, r in self._rates.items() if k in held}
        self._alone = {k: a for k, a in self._alone.items() if k in held}
        self._lows: dict[tuple[str, Option], float] = {}
        self._menus: dict[str, list[tuple[Option, int, int, float]]] = {}
        self._menus_by_work: dict[str, list[tuple[Option, int, int, float]]] = {}
        self._steps: dict[int, float] = {}  # batch tokens -> predicted step (this select)
        # AR alone: what best_alone() is at most (INF where the pool has no AR).
        self._ar_alone = self.cost.predict(1, 1) if AR1 in self.pool else INF
        self._top_rate: dict[bool, float] = {}  # _most_rate's, for this select
        self._num_requests, self._now = len(decoders), now
        slots = [self._slot(v, now, held.get(v.id)) for v in decoders]
        self._slots = slots
        self._journal: list[tuple[_Slot, Option, float]] = []  # switches, for _undo
        self._version = self._new_version = self._new_version + 1
        self._max_tokens = max_tokens if max_tokens is not None else 1 << 30
        self._tokens = sum(s.option.work_tokens for s in slots)
        self._draft_tokens = sum(s.option.draft_tokens for s in slots)  # on the draft pool
        self._rate_sum = sum(s.rate for s in slots)  # tokens per forward of the whole batch
        self._base_throughput = self._throughput()  # rescues together lose at most a share
        by_urgency = sorted((s for s in slots if s.is_free), key=self._urgency(now))
        if self.config.meet_most:
            self._meet_most(by_urgency)
        for s in by_urgency:
            if not s.searched:
                self._rescue(s, depth=1)
        self._speed_up_all(by_urgency)
        return {s.view.id: s.option for s in slots}

    # --- per request -----------------------------------------------------------------------

    def _slot(self, v: RequestView, now: float, held: Option | None = None) -> _Slot:
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
            # no need to ask below them.
            if need <= 0 or self.is_lost(v, need / safety):
                need = math.nan  # lost: even alone, no option makes it
        return _Slot(v, option, self._rate(v, option), need, is_free)

    def _options(self, v: RequestView) -> list[Option]:
        return self._candidates[v.allow_lossy]

    def _menu(self, v: RequestView) -> list[tuple[Option, int, int, float]]:
        """(option, its work tokens, its draft tokens, v's rate under it) for each of v's
        options, in _options' order; once per request and select (the passes ask it for
        every option of every request they try: ~500k lookups a select at 64 requests)."""
        menu = self._menus.get(v.id)
        if menu is None:
            menu = self._menus[v.id] = [(o, o.work_tokens, o.draft_tokens, self._rate(v, o))
                                        for o in self._options(v)]
        return menu

    def _rate(self, v: RequestView, option: Option) -> float:
        rates = self._rates.get(v.id)
        if rates is None:
            rates = self._rates[v.id] = {}
        rate = rates.get(option)
        if rate is None:  # memo: asked ~10x per request and select()
            rate = rates[option] = self._rate_of(v, option)
        return rate

    def _rate_of(self, v: RequestView, option: Option) -> float:
        if v.remaining <= 0:
            return 1.0  # nothing left to emit: no option is faster than AR (and no 0 rate)
        rate = self.acceptance.tokens_per_forward(option, v.id)
        if option.mode == LINEAR:  # an iteration is two forwards and emits <= remaining
            rate = min(rate, v.remaining / 2)
        elif option.mode in (QUADRATIC, PIPELINED):
            rate = min(rate, float(v.remaining))
        if option.mode == QUADRATIC and v.option != option:
            # Entering quadratic speculation costs a plain draft pass that emits nothing:
            # spread it over the forwards it would stay (at most `quad_horizon`).
            stay = max(1.0, min(self.quad_horizon, v.remaining / rate))
            rate *= stay / (stay + 1)
        return rate

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
        return not any(need >= self._alone_at(v, o) for o in self._options(v))

    def _alone_at(self, v: RequestView, option: Option | None) -> float:
        """v's time per token alone under option if it is one of v's options, else inf."""
        if option is None or option not in self._candidate_sets[v.allow_lossy]:
            return INF
        cost = self.cost
        return max(cost.predict(option.work_tokens, 1), cost.predict(option.draft_tokens, 1)
                   ) / self._rate(v, option)

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

    def num_tokens(self) -> int:
        """The batch tokens of the last select()'s choice."""
        return self._tokens

    def step_s(self) -> float:
        """The step the last select() predicts for its choice."""
        return self._step()

    def throughput(self) -> float:
        """The batch's predicted tokens per second under the last select()'s choice."""
        return self._throughput()

    def guards(self) -> list[tuple[float, int, _Slot, float]]:
        """(cap, index, slot, limit) of every request with a limit under the last
        select()'s choice, shortest cap first (_guards; not to be changed)."""
        return self._guards()

    def paces(self) -> dict[str, tuple[float, float, bool]]:
        """Per request of the last select(): (its predicted seconds per token, its tokens
        per forward, whether that meets its pace with the margin)."""
        step = self._step()
        return {s.view.id: (step / s.rate, s.rate, step / s.rate <= s.need)
                for s in self._slots}

    def _urgency(self, now: float):  # noqa: ANN202
        def key(s: _Slot) -> tuple[float, float]:
            spare = s.view.slack(now, self.cost.predict(1, 1))
            return (-s.view.priority, spare if not math.isnan(s.need) else INF)
        return key

    # --- the batch -------------------------------------------------------------------------

    def _step(self, tokens: int | None = None, draft_tokens: int | None = None) -> float:
        """The step: the verify (or only) pool's, or the draft pool's where that is longer
        (pipelined speculation: both run at once; same model, so the same cost model, with
        every request's overhead charged to the draft pool too: conservative)."""
        tokens = self._tokens if tokens is None else tokens
        draft = self._draft_tokens if draft_tokens is None else draft_tokens
        step = self._steps.get((tokens, draft))
        if step is None:  # asked ~25x per request per select, for a few distinct sizes
            step = self._steps[(tokens, draft)] = (
                max(self.cost.predict(tokens, self._num_requests),
                    self.cost.predict(draft, self._num_requests)) + self.interference_s)
        return step

    def _draft_if(self, s: _Slot, option: Option) -> int:
        return self._draft_tokens - s.option.draft_tokens + option.draft_tokens

    @staticmethod
    def _meets(s: _Slot, step_s: float, rate: float | None = None) -> bool:
        return step_s / (rate or s.rate) <= s.need  # False for lost (nan) requests

    def _limit(self, s: _Slot, step_s: float) -> float | None:
        """The longest time per token others may push s to: its margin if it has one, its
        bare need if it is on track without the margin, None if it is off track anyway."""
        tpt = step_s / s.rate
        if tpt <= s.need:
            return s.need
        if math.isnan(s.need):
            return None
        return max(tpt * (1 + self.config.off_track_slip), s.need / self.config.safety)

    def _guards(self) -> list[tuple[float, int, _Slot, float]]:
        """(limit x rate: the longest step that keeps o within its limit, o's index, o, its
        limit) for every o with a limit at the current step, shortest first; kept until the
        next switch (rescues try options and undo them: the guards are asked ~100x per
        select, and were an O(requests) scan each: bench/slo_selector_cost.py)."""
        version, guards = self._guards_at
        if version != self._version:
            step = self._step()
            slip, safety = 1 + self.config.off_track_slip, self.config.safety
            guards = []
            for i, o in enumerate(self._slots):  # _limit, inlined: the per-step path
                need, rate = o.need, o.rate
                tpt = step / rate
                if tpt <= need:
                    guards.append((need * rate, i, o, need))
                elif need == need:  # not nan (lost: no limit)
                    limit = max(tpt * slip, need / safety)
                    guards.append((limit * rate, i, o, limit))
            guards.sort()  # by cap, then index (unique: the slots are never compared)
            self._guards_at = (self._version, guards)
        return guards

    def _guarded(self, s: _Slot, min_priority: float) -> _Guarded:
        """Every request but s of at least min_priority, with its limit now."""
        return _Guarded(self._guards(), s, min_priority)

    def _broken(self, guarded: _Guarded, most: int) -> list[_Slot]:
        """The guarded requests the current step pushes past their limit, in slot order;
        at most `most` + 1 of them (the caller only needs to know that there are more)."""
        step = self._step()
        bound = step * (1 + 1e-9)  # caps are limit x rate: a superset, tested exactly below
        out = []
        for cap, i, o, limit in guarded.guards:
            if cap > bound:
                break
            if o is not guarded.but and o.view.priority >= guarded.min_priority and (
                    step / o.rate > limit):
                out.append((i, o))
                if len(out) > most:
                    break
        return [o for _, o in sorted(out, key=lambda x: x[0])]

    @staticmethod
    def _cap(guarded: _Guarded) -> float:
        """The longest step that keeps every guarded request within its limit."""
        return next((cap for cap, _, o, _ in guarded.guards
                     if o is not guarded.but and o.view.priority >= guarded.min_priority), INF)

    def _switch(self, s: _Slot, option: Option) -> None:
        rate = self._rate(s.view, option)
        self._tokens += option.work_tokens - s.option.work_tokens
        self._draft_tokens += option.draft_tokens - s.option.draft_tokens
        self._rate_sum += rate - s.rate
        self._journal.append((s, s.option, s.rate))
        s.option, s.rate = option, rate
        self._version = self._new_version = self._new_version + 1

    def _by_work(self, s: _Slot) -> list[tuple[Option, int, int, float]]:
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

    # --- the passes ------------------------------------------------------------------------

    def _meet_most(self, order: list[_Slot]) -> None:
        """Pass 2a, for requests whose pace only speculation meets (slower than AR alone is
        too slow; with the "expected" objective also those whose bound is below AR's pace
        while they are ahead): by `objective`, the options that maximise the requests
        expected to meet their SLO by the end (_most_expected), or ("meet_most") those that
        meet the most this step (policies/meet_most.py; a request left out gets the fastest
        option that breaks nobody met). Others are counted at AR so that none is broken."""
        hopeful = [s for s in order if s.need != INF and not math.isnan(s.need)]
        alone = self.cost.predict(1, 1)
        only = {s for s in hopeful if s.need / self.config.safety < alone or (
            self.config.search_by_bound and self.config.objective == "expected"
            and s.view.slo.tpot_below(alone))}  # ahead now, but its bound is below AR's
        missing = {s for s in only if not self._meets(s, self._step())}
        if not (only if self.config.objective == "expected" else missing):
            return
        base = self._tokens - sum(s.option.work_tokens - 1 for s in hopeful)
        base_rate = self._rate_sum - sum(s.rate - 1 for s in hopeful)
        step = self._step()
        spare = self.config.rescue_slack_steps * step
        others_wait = all(slack_of(o.view, self._now, step / o.rate) >= spare
                          for o in self._slots if o not in missing)
        floor = 0.0 if others_wait else self._base_throughput * (1 - self.config.tight_loss)
        menus = [Menu.pruned(s, (1, 1.0), [
            (o.work_tokens, s.need * self._rate(s.view, o), o, self._rate(s.view, o))
            for o in (self._options(s.view) if s in only else [AR1])
            if not o.draft_tokens]) for s in hopeful]  # step_of prices one pool only
        if self.config.objective == "expected":
            self._most_expected(hopeful, only, base, base_rate, floor)
            return
        chosen = meet_most(menus, base, self._step, self._max_tokens, base_rate, floor)
        for s in hopeful:
            self._switch(s, chosen.get(s, AR1))
        for s in hopeful:
            if s in only and s not in chosen:
                self._fastest(s, self._guarded(s, s.view.priority), False, 0.0)

    def _pace(self, s: _Slot, option: Option) -> Pace[Option]:
        rate = self._rate(s.view, option)
        if option == AR1:
            return Pace(option, 1, rate, self.config.spread_floor)
        per_iteration = rate * FORWARDS_PER_ITERATION.get(option.mode, 1)
        return Pace(option, option.work_tokens, rate, spread_of(
            self.config.iteration_cv, per_iteration, s.view.remaining, self.config.spread_floor))

    def _most_expected(self, hopeful: list[_Slot], only: set[_Slot], base: int,
                       base_rate: float, floor: float) -> None:
        """Pass 2a by expected requests met (policies/expected_met.py), searched from the
        best plan with one option for every speculation-only request (what a fixed mode
        runs: policies/uniform.py), so that the choice never expects fewer met than that
        fixed mode: the search only buys faster options on top of it."""
        menus = {s: [self._pace(s, o) for o in ([AR1] + [
            o for o in self._options(s.view) if o != AR1 and not o.draft_tokens]
            if s in only else [AR1])] for s in hopeful}
        start = self._uniform_start(hopeful, only, menus, base, base_rate, floor)
        mode = next(iter(start.values())).option.mode if start else None
        requests = []
        for s in hopeful:
            first = start.get(s, menus[s][0])
            base += first.work - 1
            base_rate += first.rate - 1
            requests.append(Request(s, s.need / self.config.safety, (first, *(
                p for p in menus[s] if p.work > first.work
                and (mode is None or not self.config.same_mode or p.option.mode == mode)))))
        chosen, _ = most_expected(requests, base, self._step, self._max_tokens,
                                  base_rate, floor)
        for s in hopeful:
            self._switch(s, chosen[s])
            # Those AR meets alone were only counted (at AR): the rescue pass is theirs.
            s.searched = s in only

    def _uniform_start(self, hopeful: list[_Slot], only: set[_Slot],
                       menus: dict[_Slot, list[Pace[Option]]], base: int, base_rate: float,
                       floor: float) -> dict[_Slot, Pace[Option]]:
        """The pace of each speculation-only request under the uniform option that expects
        the most requests met (the option most of them run now is kept unless another is
        better by `switch_gain`); empty if none fits the budget and the floor."""
        need = {s: s.need / self.config.safety for s in hopeful}
        running = Counter(s.option for s in only if s.option != AR1).most_common(1)
        incumbent = running[0][0] if running else None
        best: tuple[float, dict[_Slot, Pace[Option]]] = (-1.0, {})
        for option in self._uniform_options(only):
            paces = {s: next(p for p in menus[s] if p.option == option) for s in only}
            tokens = base + sum(p.work - 1 for p in paces.values())
            rate = base_rate + sum(p.rate - 1 for p in paces.values())
            step = self._step(tokens)
            if tokens > self._max_tokens or rate / step < floor:
                continue
            value = sum(p.p_met(step, need[s]) for s, p in paces.items()) + sum(
                menus[s][0].p_met(step, need[s]) for s in hopeful if s not in only)
            if option == incumbent:
                value *= 1 + self.config.switch_gain
            if value > best[0]:
                best = (value, paces)
        return best[1]

    def _uniform_options(self, only: set[_Slot]) -> list[Option]:
        if not self.config.uniform or not only:
            return []
        common = set.intersection(*(set(self._options(s.view)) for s in only))
        return sorted(o for o in common if o != AR1 and not o.draft_tokens)

    def _rescue(self, s: _Slot, depth: int) -> bool:
        """Give s the cheapest option that meets it without breaking anyone; True if met."""
        step = self._step()
        if math.isnan(s.need) or self._meets(s, step):
            return not math.isnan(s.need)
        guarded = self._guarded(s, s.view.priority)
        saved = (self._tokens, self._draft_tokens, self._rate_sum, self._version)
        on_track = self._step() / s.rate <= s.need / self.config.safety
        floor = 0.0 if self._others_have_slack(s) else (
            self._base_throughput * (1 - self.config.rescue_loss))
        most = self.config.max_rescued
        # Below this step nobody guarded is broken (the caps' rounding: _broken).
        safe_step = self._cap(guarded) / (1 + 1e-9)
        hopeless = self._hopeless_above(guarded, depth)
        tokens_0 = self._tokens - s.option.work_tokens
        draft_0 = self._draft_tokens - s.option.draft_tokens
        for option, work, draft, rate in self._by_work(s):
            tokens = tokens_0 + work
            step = self._step(tokens, draft_0 + draft)
            if tokens > self._max_tokens or step > hopeless or not self._meets(s, step, rate):
                continue
            if (on_track and option not in (AR1, s.view.option)
                    and not self._safe_bet(s, tokens, option)):
                continue
            if step < safe_step:  # nobody broken: the batch's throughput decides, as below
                if (self._rate_sum + (rate - s.rate)) / step >= floor:
                    self._switch(s, option)
                    return True
                continue
            mark = len(self._journal)
            self._switch(s, option)
            broken = self._broken(guarded, most)
            # Re-rescuing more than a few broken requests rarely saves them all and costs
            # O(requests^2) per attempt (64 requests: a 60 ms select): give up on it.
            if depth > 0 and broken and len(broken) <= most and all(
                    o.is_free for o in broken):
                for o in broken:
                    self._rescue(o, depth - 1)
                broken = self._broken(guarded, 0)
                if not broken and not self._step() / s.rate <= s.need:
                    broken = [s]
            if not broken and self._throughput() >= floor:
                return True
            self._undo(mark, saved)
        self._fastest(s, guarded, on_track, floor)  # not met now: lose as little as possible
        return False

    def _hopeless_above(self, guarded: _Guarded, depth: int) -> float:
        """The step above which a rescue attempt fails whatever it re-rescues: past the cap
        of a guarded request that may not be re-rescued (held or pinned, or any at depth 0),
        or of `max_rescued` + 1 of them (the caps' rounding as in _broken). Most attempts
        of a request the batch cannot make room for end here, without a switch and undo."""
        num = 0
        for cap, _, o, _ in guarded.guards:
            if o is guarded.but or o.view.priority < guarded.min_priority:
                continue
            num += 1
            if depth <= 0 or not o.is_free or num > self.config.max_rescued:
                return cap * (1 + 1e-9)
        return INF

    def _undo(self, mark: int, saved: tuple[int, int, float, int]) -> None:
        """Back to the state of `saved` (_rescue's), undoing the switches since `mark`."""
        journal = self._journal
        while len(journal) > mark:
            o, option, rate = journal.pop()
            o.option, o.rate = option, rate
        self._tokens, self._draft_tokens, self._rate_sum, self._version = saved

    def _others_have_slack(self, s: _Slot) -> bool:
        """Every request but s has `rescue_slack_steps` steps of slack at its pace now."""
        version, short = self._short_at
        if version != self._version:  # kept until the next switch, as _guards
            step = self._step()
            spare = self.config.rescue_slack_steps * step
            short = []
            for o in self._slots:
                if not slack_of(o.view, self._now, step / o.rate) >= spare:
                    short.append(o)
                    if len(short) > 1:
                        break
            self._short_at = (self._version, short)
        return not short or short == [s]

    def _throughput(self) -> float:
        """The batch's predicted tokens per second under the current options."""
        step = self._step()
        return self._rate_sum / step if step > 0 else 0.0

    def _safe_bet(self, s: _Slot, tokens: int, option: Option) -> bool:
        """A request on track without the margin does not trade that for a gamble: the
        option must keep it on track even if it accepts drafts worse than expected."""
        step = self._step(tokens, self._draft_if(s, option))
        return step / self._rate_low(s.view, option) <= s.need / self.config.safety

    def _fastest(self, s: _Slot, guarded: _Guarded,
                 cautious: bool, floor: float) -> None:
        """The option with the shortest time per token for s that breaks nobody guarded
        and keeps the batch's tokens per second above floor; `cautious` (s is on track
        without the margin) ranks by the cautious acceptance."""
        cap = self._cap(guarded)
        best, best_tpt = s.option, self._step() / s.rate
        others = self._rate_sum - s.rate
        tokens_0 = self._tokens - s.option.work_tokens
        draft_0 = self._draft_tokens - s.option.draft_tokens
        current = s.view.option
        for option, work, draft, plain in self._menu(s.view):
            tokens = tokens_0 + work
            step = self._step(tokens, draft_0 + draft)
            rate = (self._rate_low(s.view, option) if cautious and option != current
                    else plain)
            if (tokens <= self._max_tokens and step <= cap and step / rate < best_tpt
                    and (others + plain) / step >= floor):
                best, best_tpt = option, step / rate
        if best is not s.option:
            self._switch(s, best)

    def _speed_up_all(self, order: list[_Slot]) -> None:
        """Pass 3 over every free request; the guards are recomputed only after a switch
        (rare under load), so a step costs O(requests x options), not O(requests^2)."""
        if self.config.uniform_speed_up:
            self._speed_up_uniform(order)
        caps, kept = self._caps(), self._margin_caps()
        for s in order:
            cap = min(next((c for c, o in caps if o is not s), INF),
                      next((c for c, o in kept if o is not s), INF))
            if self._speed_up(s, cap):
                caps, kept = self._caps(), self._margin_caps()

    def _only_speculation(self, s: _Slot) -> bool:
        """s's TPOT bound is below AR's time per token alone: pass 2a's kind of request
        (searched when it is re-decided; the decision cache may hold it)."""
        return s.view.slo.tpot_below(self._ar_alone)

    def _margin_caps(self) -> list[tuple[float, _Slot]]:
        """_caps with `spare_margin` for the requests outside pass 2a's kind: speculating
        up to their bare limit made met requests miss later (at their limit they have even
        odds). Those inside it are weighed by the search itself, which buys their margin;
        with the margin on them too, all-tight cells lost (NLD-8B tight medium 0.98 ->
        0.95x the best fixed mode)."""
        margin, out = self.config.spare_margin, []
        for cap, _, o, _ in self._guards():
            if not self._only_speculation(o):
                out.append((cap * margin, o))
                if len(out) == 2:
                    break
        return out

    def _speed_up_uniform(self, order: list[_Slot]) -> None:
        """Every free request at AR moves to one option (while no request of pass 2a's kind
        runs) if that raises the batch's tokens per second by `min_gain`, keeps every other
        request within `spare_margin` of its limit and each mover within it at its cautious
        acceptance: what a fixed mode runs. One request at a time can miss it: on a
        GPU-shaped device one request's speculation lengthens everyone's step for a small
        gain, all of them together win (NLD-8B, 30 requests: one at linear B=8 +2 %, all
        +30 %).
        O(options x movers), with arithmetic only until one option is chosen."""
        if any(self._only_speculation(s) for s in self._slots):
            return  # requests only speculation serves have the device's extra work first
        movers = [s for s in order if s.option == AR1]
        if len(movers) < 2:
            return
        ids = {id(s) for s in movers}
        margin = self.config.spare_margin
        cap = next((c for c, _, o, _ in self._guards() if id(o) not in ids), INF) * margin
        lossy = all(s.view.allow_lossy for s in movers)  # else lossless options only
        pool = [o for o in self._candidates[lossy] if o != AR1 and not o.draft_tokens]
        n, rate_0 = len(movers), sum(s.rate for s in movers)
        best, best_value = None, self._throughput() * (1 + self.config.min_gain)
        others = self._rate_sum - rate_0
        # Each mover's rate is at most the option's overall rate times the largest factor:
        # an option whose bound does not pass is not priced request by request.
        most = max(self.acceptance.factor(s.view.id) for s in movers)
        for option in pool:
            tokens = self._tokens + n * (option.work_tokens - 1)
            if tokens > self._max_tokens:
                continue
            step = self._step(tokens)
            if (others + n * self.acceptance.overall_value(option) * most) / step <= best_value:
                continue
            value = (others + sum(self._rate(s.view, option) for s in movers)) / step
            if value <= best_value or step > cap or not all(
                    s.need == INF or step / self._rate_low(s.view, option) <= s.need * margin
                    for s in movers):
                continue
            best, best_value = option, value
        if best is not None:
            for s in movers:
                self._switch(s, best)

    def _caps(self) -> list[tuple[float, _Slot]]:
        """(longest step that keeps o within its limit, o) for every guarded o, shortest
        first."""
        return [(cap, o) for cap, _, o, _ in self._guards()[:2]]

    def _speed_up(self, s: _Slot, cap: float) -> bool:
        """Move s to the option that most raises the batch's tokens per second without
        pushing any guarded request past its limit (the step stays <= cap); True if moved."""
        step = self._step()
        met = self._meets(s, step)
        total = self._rate_sum
        best, best_value = s.option, total / step * (1 + self.config.min_gain)
        if s.option == s.view.option:
            best_value *= 1 + self.config.switch_gain  # stay unless clearly better
        tokens_0 = self._tokens - s.option.work_tokens
        draft_0 = self._draft_tokens - s.option.draft_tokens
        v = s.view
        if v.option is None or v.option == s.option:
            # An upper bound of every option's value: the most tokens per forward any
            # option gives v, at the step of the least work (AR's). Under load one request
            # moves the batch's sum by a few % and no option passes `min_gain`: its menu is
            # not built (bench/slo_selector_cost.py `mixed`: ~9 met requests re-chosen a
            # step at 64).
            most = self._most_rate(v)
            if (total - s.rate + most) / self._step(tokens_0 + 1, draft_0) <= best_value:
                return False
        for option, work, draft, rate in self._menu(s.view):
            tokens = tokens_0 + work
            new_step = self._step(tokens, draft_0 + draft)
            # A request that meets its SLO does not gamble it on speed: the option must
            # still meet it if this request accepts drafts worse than expected.
            sure = rate if option in (AR1, s.view.option) else self._rate_low(s.view, option)
            if (tokens > self._max_tokens or new_step > cap
                    or (met and not self._meets(s, new_step, sure))):
                continue
            value = (total - s.rate + rate) / new_step
            if option == s.view.option:
                value *= 1 + self.config.switch_gain + self.config.min_gain
            if value > best_value * (1 + 1e-9):
                best, best_value = option, value
        if best == s.option:
            return False
        self._switch(s, best)
        return True
