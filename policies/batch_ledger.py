"""The batch under the mode selector's current choice (policies/selector.py): its tokens,
step and throughput, switches and their undo, and the guards (who a change must not break)."""

from __future__ import annotations

import math

from policies.option import Option
from policies.option_prices import OptionPrices
from policies.preemption import slack_of
from policies.selector_slot import Guarded, Slot

INF = math.inf


class BatchLedger(OptionPrices):
    """The batch half of ModeSelector: every pass switches options through it."""

    def num_tokens(self) -> int:
        """The batch tokens of the last select()'s choice."""
        return self._tokens

    def step_s(self) -> float:
        """The step the last select() predicts for its choice."""
        return self._step()

    def throughput(self) -> float:
        """The batch's predicted tokens per second under the last select()'s choice."""
        return self._throughput()

    def guards(self) -> list[tuple[float, int, Slot, float]]:
        """(cap, index, slot, limit) of every request with a limit under the last
        select()'s choice, shortest cap first (_guards; not to be changed)."""
        return self._guards()

    def paces(self) -> dict[str, tuple[float, float, bool]]:
        """Per request of the last select(): (its predicted seconds per token, its tokens
        per forward, whether that meets its pace with the margin)."""
        step = self._step()
        return {s.view.id: (step / s.rate, s.rate, step / s.rate <= s.need)
                for s in self._slots}

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

    def _draft_if(self, s: Slot, option: Option) -> int:
        return self._draft_tokens - s.option.draft_tokens + option.draft_tokens

    @staticmethod
    def _meets(s: Slot, step_s: float, rate: float | None = None) -> bool:
        return step_s / (rate or s.rate) <= s.need  # False for lost (nan) requests

    def _limit(self, s: Slot, step_s: float) -> float | None:
        """The longest time per token others may push s to: its bare need while it meets it
        at step_s; behind it, its time per token now plus `off_track_slip` (at least need /
        safety), so a late request is not pushed much further behind; None if it is lost
        (need nan: nobody protects it)."""
        tpt = step_s / s.rate
        if tpt <= s.need:
            return s.need
        if math.isnan(s.need):
            return None
        return max(tpt * (1 + self.config.off_track_slip), s.need / self.config.safety)

    def _guards(self) -> list[tuple[float, int, Slot, float]]:
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

    def _guarded(self, s: Slot, min_priority: float) -> Guarded:
        """Every request but s of at least min_priority, with its limit now."""
        return Guarded(self._guards(), s, min_priority)

    def _breaks(self, guarded: Guarded) -> bool:
        """Whether the current step pushes a guarded request past its limit."""
        step = self._step()
        bound = step * (1 + 1e-9)  # caps are limit x rate: a superset, tested exactly below
        for cap, _, o, limit in guarded.guards:
            if cap > bound:
                return False
            if o is not guarded.but and o.view.priority >= guarded.min_priority and (
                    step / o.rate > limit):
                return True
        return False

    @staticmethod
    def _cap(guarded: Guarded) -> float:
        """The longest step that keeps every guarded request within its limit."""
        return next((cap for cap, _, o, _ in guarded.guards
                     if o is not guarded.but and o.view.priority >= guarded.min_priority), INF)

    def _switch(self, s: Slot, option: Option) -> None:
        rate = self._rate(s.view, option)
        self._tokens += option.work_tokens - s.option.work_tokens
        self._draft_tokens += option.draft_tokens - s.option.draft_tokens
        self._rate_sum += rate - s.rate
        self._journal.append((s, s.option, s.rate))
        s.option, s.rate = option, rate
        self._version = self._new_version = self._new_version + 1

    def _undo(self, mark: int, saved: tuple[int, int, float, int]) -> None:
        """Back to the state of `saved` (_rescue's), undoing the switches since `mark`."""
        journal = self._journal
        while len(journal) > mark:
            o, option, rate = journal.pop()
            o.option, o.rate = option, rate
        self._tokens, self._draft_tokens, self._rate_sum, self._version = saved

    def _throughput(self) -> float:
        """The batch's predicted tokens per second under the current options."""
        step = self._step()
        return self._rate_sum / step if step > 0 else 0.0

    def _others_have_slack(self, s: Slot) -> bool:
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
