"""Pass 2 of the mode selector (policies/selector.py): rescue a request whose time per
token misses its SLO with the cheapest option that breaks nobody guarded, re-rescuing a few
it breaks; else the fastest option that breaks nobody."""

from __future__ import annotations

import math

from policies.batch_ledger import BatchLedger
from policies.option import AR1, Option
from policies.selector_slot import Guarded, Slot

INF = math.inf


class RescuePass(BatchLedger):

    def _rescue(self, s: Slot, depth: int) -> bool:
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

    def _hopeless_above(self, guarded: Guarded, depth: int) -> float:
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
