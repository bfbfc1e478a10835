"""Pass 2 of the mode selector (policies/selector.py): rescue a request whose time per
token misses its SLO with the cheapest option that breaks nobody guarded; else the fastest
option that breaks nobody."""

from __future__ import annotations

import math

from policies.batch_ledger import BatchLedger
from policies.option import AR1, Option
from policies.selector_slot import Guarded, Slot


class RescuePass(BatchLedger):

    def _rescue(self, s: Slot) -> bool:
        """Give s the cheapest option that meets it without breaking anyone; True if met.
        Nobody else is moved to make room: a request the longer step would break keeps its
        option and s looks further (a request on track at AR was re-rescued into
        speculation in turn, trading a near-sure pace for a gamble on its acceptance: on a
        slowed CPU profile 134 of 304 admitted interactive requests, auto 164 met against
        AR's 191; BENCHMARKS.md, "#12's CPU-engine target, eighth session")."""
        step = self._step()
        if math.isnan(s.need) or self._meets(s, step):
            return not math.isnan(s.need)
        guarded = self._guarded(s, s.view.priority)
        on_track = step / s.rate <= s.need / self.config.safety
        floor = 0.0 if self._others_have_slack(s) else (
            self._base_throughput * (1 - self.config.rescue_loss))
        # Below safe_step nobody guarded is broken, above edge somebody is; between them
        # the caps' rounding (_breaks) decides.
        cap = self._cap(guarded)
        safe_step, edge = cap / (1 + 1e-9), cap * (1 + 1e-9)
        tokens_0 = self._tokens - s.option.work_tokens
        draft_0 = self._draft_tokens - s.option.draft_tokens
        for option, work, draft, rate in self._by_work(s):
            tokens = tokens_0 + work
            step = self._step(tokens, draft_0 + draft)
            if (tokens > self._max_tokens or step > edge or not self._meets(s, step, rate)
                    or (self._rate_sum + (rate - s.rate)) / step < floor):
                continue
            if (on_track and option not in (AR1, s.view.option)
                    and not self._safe_bet(s, tokens, option)):
                continue
            if step < safe_step:
                self._switch(s, option)
                return True
            saved = (self._tokens, self._draft_tokens, self._rate_sum, self._version)
            mark = len(self._journal)
            self._switch(s, option)
            if not self._breaks(guarded):
                return True
            self._undo(mark, saved)
        self._fastest(s, guarded, on_track, floor)  # not met now: lose as little as possible
        return False

    def _safe_bet(self, s: Slot, tokens: int, option: Option) -> bool:
        """A request on track without the margin does not trade that for a gamble: the
        option must keep it on track even if it accepts drafts worse than expected."""
        step = self._step(tokens, self._draft_if(s, option))
        return step / self._rate_low(s.view, option) <= s.need / self.config.safety

    def _fastest(self, s: Slot, guarded: Guarded,
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
