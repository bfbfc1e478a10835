"""Pass 2a of the mode selector (policies/selector.py): one search over the requests whose
TPOT bound only speculation meets, for the options that expect the most of them met
(policies/expected_met.py), started from the best single option for all of them."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection

from policies.acceptance import FORWARDS_PER_ITERATION
from policies.expected_met import Pace, Request, most_expected, spread_of
from policies.loss_budget import Payer, loss_budget
from policies.meet_most import Menu, meet_most
from policies.option import AR1, Option
from policies.preemption import slack_of
from policies.request_view import RequestView
from policies.rescue_pass import RescuePass
from policies.selector_slot import Slot

INF = math.inf


class TightSearch(RescuePass):
    # Each request's paces by option, with the rate and remaining tokens they were priced at.
    _paces: dict[tuple[str, Option], tuple[float, int, Pace[Option]]]
    _uniform: dict[bool, list[Option]]  # _uniform_options', by allow_lossy

    def _meet_most(self, order: list[Slot]) -> None:
        """Pass 2a, for requests whose pace only speculation meets (slower than AR alone is
        too slow; with the "expected" objective also those whose bound is below AR's pace
        while they are ahead): by `objective`, the options that maximise the requests
        expected to meet their SLO by the end (_most_expected), or ("meet_most") those that
        meet the most this step (policies/meet_most.py; a request left out gets the fastest
        option that breaks nobody met). Others are counted at AR so that none is broken."""
        hopeful = [s for s in order if s.need != INF and not math.isnan(s.need)]
        alone = self.cost.predict(1, 1)
        # Ordered like `order` (dicts as ordered sets): float sums and ties over them must
        # not follow a set's order, which follows memory addresses.
        only = dict.fromkeys(s for s in hopeful if (s.need / self.config.safety < alone
                                                    and not self._late_rescue(s.view, alone)) or (
            self.config.search_by_bound and self.config.objective == "expected"
            and s.view.slo.tpot_below(alone)))  # ahead now, but its bound is below AR's
        missing = dict.fromkeys(s for s in only if not self._meets(s, self._step()))
        if not (only if self.config.objective == "expected" else missing):
            return
        base = self._tokens - sum(s.option.work_tokens - 1 for s in hopeful)
        base_rate = self._rate_sum - sum(s.rate - 1 for s in hopeful)
        step = self._step()
        spare = self.config.rescue_slack_steps * step
        if self.config.budget_by_payer:
            loss = loss_budget(self._payers(missing, set(hopeful), step, spare),
                               self._step(base), self.config.deadline_margin,
                               self.config.tight_loss, spare)
        else:
            others_wait = all(slack_of(o.view, self._now, step / o.rate) >= spare
                              for o in self._slots if o not in missing)
            loss = 1.0 if others_wait else self.config.tight_loss
        floor = self._base_throughput * (1 - loss)
        if self.config.objective == "expected":
            self._most_expected(hopeful, only, base, base_rate, floor)
            return
        menus = [Menu.pruned(s, (1, 1.0), [
            (o.work_tokens, s.need * self._rate(s.view, o), o, self._rate(s.view, o))
            for o in (self._options(s.view) if s in only else [AR1])
            if not o.draft_tokens]) for s in hopeful]  # step_of prices one pool only
        chosen = meet_most(menus, base, self._step, self._max_tokens, base_rate, floor)
        for s in hopeful:
            self._switch(s, chosen.get(s, AR1))
        for s in hopeful:
            if s in only and s not in chosen:
                self._fastest(s, self._guarded(s, s.view.priority), False, 0.0)

    def _payers(self, missing: Collection[Slot], counted: set[Slot], step: float,
                spare: float) -> list[Payer]:
        """Every request but the missing ones, as pass 2a's payers (counted ones at AR).
        Past the first that cannot wait `spare`, slack decides nothing (loss_budget's
        every-payer-waits test has failed): theirs is not computed (-inf)."""
        out, waiting, now = [], True, self._now
        for o in self._slots:
            if o in missing:
                continue
            slack = slack_of(o.view, now, step / o.rate) if waiting else -INF
            waiting = slack >= spare
            out.append(Payer(o.view.slo, o.need,
                             self._rate(o.view, AR1) if o in counted else o.rate, slack))
        return out

    def _late_rescue(self, v: RequestView, alone: float) -> bool:
        """v's TPOT bound is one AR meets alone, and v fell behind it: a rescue, left to the
        rescue pass, which buys speculation with none of the others' throughput. In the
        search, pass 2a's loss budget bought it (tandem-tiny interactive overload, one seed:
        all 9 it moved off AR missed; BENCHMARKS.md, "sixth session")."""
        return (not self.config.late_in_search and v.slo.tpot_ms is not None
                and not v.slo.tpot_below(alone))

    def _pace(self, s: Slot, option: Option, rate: float) -> Pace[Option]:
        """s's pace under option, at its rate under it (_rate's)."""
        v = s.view
        remaining = v.remaining
        key = (v.id, option)
        kept = self._paces.get(key)
        if kept is not None and kept[0] == rate and (kept[1] == remaining or option is AR1):
            # The same pace (deferral's second select, a held request's; AR's spread is the
            # floor, whatever is left).
            return kept[2]
        if option is AR1:
            pace = Pace(option, 1, rate, self.config.spread_floor)
        else:
            per_iteration = rate * FORWARDS_PER_ITERATION.get(option.mode, 1)
            pace = Pace(option, option.work_tokens, rate, spread_of(
                self.config.iteration_cv, per_iteration, remaining, self.config.spread_floor))
        if len(self._paces) > 4096:
            self._paces.clear()  # of requests long gone, mostly
        self._paces[key] = (rate, remaining, pace)
        return pace

    def _most_expected(self, hopeful: list[Slot], only: Collection[Slot], base: int,
                       base_rate: float, floor: float) -> None:
        """Pass 2a by expected requests met (policies/expected_met.py), searched from the
        best plan with one option for every speculation-only request (what a fixed mode
        runs: _uniform_start), so that the choice never expects fewer met than that
        fixed mode: the search only buys faster options on top of it."""
        menus = {}
        for s in hopeful:
            options = self._searched[s.view.allow_lossy] if s in only else [AR1]
            rates = self._rates_of(s.view, options)
            menus[s] = [self._pace(s, o, rate) for o, rate in zip(options, rates, strict=True)]
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

    def _uniform_start(self, hopeful: list[Slot], only: Collection[Slot],
                       menus: dict[Slot, list[Pace[Option]]], base: int, base_rate: float,
                       floor: float) -> dict[Slot, Pace[Option]]:
        """The pace of each speculation-only request under the uniform option that expects
        the most requests met (the option most of them run now is kept unless another is
        better by `uniform_gain`); empty if none fits the budget and the floor. Those of
        pass 2a's kind that keep their option this step (_fellows) are valued at each option
        too: the next select searches them with the free ones, and an option chosen for the
        free ones alone was the one that search moved them off."""
        need = {s: s.need / self.config.safety for s in hopeful}
        uniform = self._uniform_options(only)
        fellows = self._fellows(uniform) if self.config.uniform_with_fellows else []
        # What they run now (a free slot starts this select at AR: its view says); ties go
        # to the first in `uniform`'s order (not a set's, which varies from run to run).
        running = Counter([s.view.option for s in hopeful if s in only]
                          + [f.option for f, _, _ in fellows])
        incumbent = max((o for o in uniform if running[o]), key=running.__getitem__,
                        default=None)
        best: tuple[float, dict[Slot, Pace[Option]]] = (-1.0, {})
        by_option = {s: {p.option: p for p in menus[s]} for s in only}
        counted = [(menus[s][0], need[s]) for s in hopeful if s not in only]  # at AR
        for option in uniform:
            paces = {s: by_option[s][option] for s in only}
            # (sums of lists, not generators: the same sums, without a resume per request)
            tokens = base + sum([p.work - 1 for p in paces.values()])
            rate = base_rate + sum([p.rate - 1 for p in paces.values()])
            step = self._step(tokens)
            if tokens > self._max_tokens or rate / step < floor:
                continue
            value = 0.0
            if fellows:  # valued at the step they would make at this option too
                step = self._step(tokens + sum([m[option].work - f.option.work_tokens
                                                for f, _, m in fellows]))
                value = sum([m[option].p_met(step, n) for _, n, m in fellows])
            value += sum([p.p_met(step, need[s]) for s, p in paces.items()]) + sum(
                [p.p_met(step, n) for p, n in counted])
            if option == incumbent:
                value *= 1 + self.config.uniform_gain
            if value > best[0]:
                best = (value, paces)
        return best[1]

    def _fellows(self, options: list[Option]
                 ) -> list[tuple[Slot, float, dict[Option, Pace[Option]]]]:
        """(slot, need, pace by option) of every auto request of pass 2a's kind that keeps
        its speculative option this step and can still be met. A newcomer beside linear
        fellows mid-iteration (their verify pass) was started on quadratic speculation
        alone, and the next select moved it to linear with the others: its entry pass
        emitted nothing (NLD-8B tight medium_high: 17 requests lost that way in seed 0)."""
        out = []
        for f in self._slots:
            if (f.is_free or f.option == AR1 or f.view.fixed is not None or f.need == INF
                    or math.isnan(f.need) or not f.view.slo.tpot_below(self._ar_alone)):
                continue
            rates = self._rates_of(f.view, options)
            out.append((f, f.need / self.config.safety,
                        {o: self._pace(f, o, r) for o, r in zip(options, rates, strict=True)}))
        return out

    def _uniform_options(self, only: Collection[Slot]) -> list[Option]:
        """The options every request of `only` has, but AR and the draft pool's, sorted: a
        lossless request's options are a subset of a lossy one's, so those of the strictest."""
        if not self.config.uniform or not only:
            return []
        return self._uniform[all(s.view.allow_lossy for s in only)]
