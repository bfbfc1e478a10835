"""The mode selector: each step, an option (mode and block length) for every decoding
request in auto, chosen for the whole batch at once because they share one step time.

  step_s = cost(batch tokens, batch requests);  a request's time per token = step_s / tpf
  (tpf: its tokens per forward under the option, from the acceptance estimator).

1. Start every free auto request at AR: the least device work per token.
2a. Requests whose TPOT bound AR misses even alone (or, without a TPOT bound, who fell that
   far behind their deadline; one whose TPOT bound AR meets is the rescue pass's): one search
   for the options that maximise the requests *expected* to meet their SLO by the end
   (policies/expected_met.py), started from the best single option for all of them (what a
   fixed mode runs), so that it never expects fewer met than that fixed mode.
2. Rescue, tightest first: a request whose time per token misses what its SLO needs gets
   the cheapest option that meets it, provided every request of equal or higher priority
   that met before still meets; nobody else is moved to make room (policies/rescue_pass.py
   says why). A request no option saves even alone is lost: it stays at AR and nobody
   protects it. Rescues cost the batch at most `rescue_loss` of its tokens
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
from collections.abc import Mapping, Sequence

from policies.acceptance import AcceptanceEstimator
from policies.cost_model import CostModel
from policies.option import AR1, Option, candidates
from policies.request_view import RequestView
from policies.selector_config import (
    BLOCK_BOUNDS,
    DEFAULT_CONFIG,
    LADDER,
    QUAD_HORIZON,
    THRESHOLD_BOUNDS,
    SelectorConfig,
)
from policies.selector_slot import Slot
from policies.spare_compute import SpareCompute
from policies.tight_search import TightSearch

__all__ = ["BLOCK_BOUNDS", "LADDER", "QUAD_HORIZON", "THRESHOLD_BOUNDS", "ModeSelector",
           "SelectorConfig"]

INF = math.inf


class ModeSelector(TightSearch, SpareCompute):
    """Composes the passes (policies/tight_search.py, rescue_pass.py, spare_compute.py)
    over the batch (batch_ledger.py) and the per-request prices (option_prices.py)."""

    def __init__(self, cost: CostModel, acceptance: AcceptanceEstimator,
                 config: SelectorConfig = DEFAULT_CONFIG) -> None:
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
        self._paces = {}  # TightSearch._pace's
        self._num_requests = 0  # decoders in the last select (0: none yet)
        bounds = {m: (lo, hi) for m, lo, hi in config.block_bounds}
        self.pool = tuple(o for o in config.pool if o == AR1 or (
            o in acceptance.overall and (o.mode not in bounds
                                         or bounds[o.mode][0] <= o.block <= bounds[o.mode][1])))
        self._candidates = {lossy: candidates(lossy, self.pool) for lossy in (False, True)}
        self._candidate_sets = {lossy: frozenset(c) for lossy, c in self._candidates.items()}
        self._by_work_order = {lossy: sorted(c, key=lambda o: o.work_tokens)
                               for lossy, c in self._candidates.items()}
        # Pass 2a's menu (policies/tight_search.py): AR first, no option on a draft pool.
        self._searched = {lossy: [AR1] + [o for o in c if o != AR1 and not o.draft_tokens]
                          for lossy, c in self._candidates.items()}
        self._uniform = {lossy: sorted(menu[1:]) for lossy, menu in self._searched.items()}
        # A new number for every state of the batch's options (a switch, a select); an undo
        # goes back to the number of the state it restores: what _guards and _short keep.
        self._version = self._new_version = 0
        self._guards_at: tuple[int, list[tuple[float, int, Slot, float]]] = (-1, [])
        self._short_at: tuple[int, list[Slot]] = (-1, [])

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
        self._steps = {}  # (batch tokens, draft tokens) -> predicted step (this select)
        # AR alone: what best_alone() is at most (INF where the pool has no AR).
        self._ar_alone = self.cost.predict(1, 1) if AR1 in self.pool else INF
        self._top_rate: dict[bool, float] = {}  # _most_rate's, for this select
        self._lost_below: dict[bool, float] = {}  # is_lost's, for this select
        self._num_requests, self._now = len(decoders), now
        slots = [self._slot(v, now, held.get(v.id)) for v in decoders]
        self._slots = slots
        self._journal: list[tuple[Slot, Option, float]] = []  # switches, for _undo
        self._version = self._new_version = self._new_version + 1
        self._max_tokens = max_tokens if max_tokens is not None else 1 << 30
        # (sums of lists, not generators: the same sums, without a resume per request)
        self._tokens = sum([s.option.work_tokens for s in slots])
        self._draft_tokens = sum([s.option.draft_tokens for s in slots])  # on the draft pool
        self._rate_sum = sum([s.rate for s in slots])  # tokens per forward of the whole batch
        self._base_throughput = self._throughput()  # rescues together lose at most a share
        by_urgency = sorted((s for s in slots if s.is_free), key=self._urgency(now))
        if self.config.meet_most:
            self._meet_most(by_urgency)
        for s in by_urgency:
            if not s.searched:
                self._rescue(s)
        self._speed_up_all(by_urgency)
        return {s.view.id: s.option for s in slots}

    def _urgency(self, now: float):  # noqa: ANN202
        def key(s: Slot) -> tuple[float, float]:
            spare = s.view.slack(now, self.cost.predict(1, 1))
            return (-s.view.priority, spare if not math.isnan(s.need) else INF)
        return key
