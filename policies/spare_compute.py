"""Pass 3 of the mode selector (policies/selector.py): spare compute buys speed, first one
option for every free request at AR, then request by request, within `spare_margin` of
every guarded request's limit."""

from __future__ import annotations

import math

from policies.batch_ledger import BatchLedger
from policies.option import AR1
from policies.selector_slot import Slot

INF = math.inf


class SpareCompute(BatchLedger):

    def _speed_up_all(self, order: list[Slot]) -> None:
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

    def _only_speculation(self, s: Slot) -> bool:
        """s's TPOT bound is below AR's time per token alone: pass 2a's kind of request
        (searched when it is re-decided; the decision cache may hold it)."""
        return s.view.slo.tpot_below(self._ar_alone)

    def _margin_caps(self) -> list[tuple[float, Slot]]:
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

    def _speed_up_uniform(self, order: list[Slot]) -> None:
        """Every free request at AR moves to one option (while no request of pass 2a's kind
        runs) if that raises the batch's tokens per second by `min_gain`, keeps every other
        request within `spare_margin` of its limit and each mover within it at its cautious
        acceptance: what a fixed mode runs. One request at a time can miss it: on a
        GPU-shaped device one request's speculation lengthens everyone's step for a small
        gain, all of them together win (NLD-8B, 30 requests: one at linear B=8 +2 %, all
        +30 %).
        O(options x movers), with arithmetic only until one option is chosen."""
        movers = [s for s in order if s.option == AR1]
        if len(movers) < 2:
            return  # (asked first: the free requests are few where the decision cache holds)
        alone = self._ar_alone  # _only_speculation over the batch, inlined (every select)
        if any(t is not None and t / 1e3 < alone for t in (s.view.slo.tpot_ms
                                                            for s in self._slots)):
            return  # requests only speculation serves have the device's extra work first
        ids = {id(s) for s in movers}
        margin = self.config.spare_margin
        cap = next((c for c, _, o, _ in self._guards() if id(o) not in ids), INF) * margin
        lossy = all(s.view.allow_lossy for s in movers)  # else lossless options only
        pool = self._searched[lossy][1:]  # pass 2a's menu less AR: no option on a draft pool
        n, rate_0 = len(movers), sum(s.rate for s in movers)
        best, best_value = None, self._throughput() * (1 + self.config.min_gain)
        others = self._rate_sum - rate_0
        # Each mover's rate is at most the option's overall rate times the largest factor:
        # an option whose bound does not pass is not priced request by request.
        most = max(self.acceptance.factor(s.view.id) for s in movers)
        views = [s.view for s in movers]
        for option in pool:
            tokens = self._tokens + n * (option.work_tokens - 1)
            if tokens > self._max_tokens:
                continue
            step = self._step(tokens)
            if (others + n * self.acceptance.overall_value(option) * most) / step <= best_value:
                continue
            value = (others + sum(self._prices((option,), views))) / step
            if value <= best_value or step > cap or not all(
                    s.need == INF or step / self._rate_low(s.view, option) <= s.need * margin
                    for s in movers):
                continue
            best, best_value = option, value
        if best is not None:
            for s in movers:
                self._switch(s, best)

    def _caps(self) -> list[tuple[float, Slot]]:
        """(longest step that keeps o within its limit, o) for every guarded o, shortest
        first."""
        return [(cap, o) for cap, _, o, _ in self._guards()[:2]]

    def _speed_up(self, s: Slot, cap: float) -> bool:
        """Move s to the option that most raises the batch's tokens per second by min_gain
        (searched_gain for a request pass 2a put on speculation) without pushing any guarded
        request past its limit (the step stays <= cap); True if moved."""
        step = self._step()
        met = self._meets(s, step)
        total = self._rate_sum
        gain = (self.config.searched_gain if s.searched and s.option != AR1
                else self.config.min_gain)
        best, best_value = s.option, total / step * (1 + gain)
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
            value = (total - s.rate + rate) / new_step
            if option == v.option:
                value *= 1 + self.config.switch_gain + gain
            if not value > best_value * (1 + 1e-9) or tokens > self._max_tokens or (
                    new_step > cap):
                continue  # (the value first: most options fail it, and it needs no cautious rate)
            # A request that meets its SLO does not gamble it on speed: the option must
            # still meet it if this request accepts drafts worse than expected.
            sure = rate if option in (AR1, v.option) else self._rate_low(v, option)
            if met and not self._meets(s, new_step, sure):
                continue
            best, best_value = option, value
        if best == s.option:
            return False
        self._switch(s, best)
        return True
