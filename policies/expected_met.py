"""Options that maximise the number of requests expected to meet their SLO by the end, not
the number that meet it this step.

A request's pace over its remaining tokens is uncertain: drafts are accepted in random runs,
so at an option emitting r tokens per forward on average, its mean time per token over m
more iterations is step / r with a relative spread of about cv / sqrt(m) (cv: of one
iteration's tokens; a floor `spread_floor` for step-time noise and estimate error). So

  P(met) = Phi((1 - step / (need x r)) / spread)      need: seconds per token it may take

A request exactly at its need has even odds, one with margin is nearly sure, one far behind
is nearly lost. Summing P over the batch values what a fixed mode's margin buys (requests
that bank slack while the device has room) and what giving up costs, which "met this step"
(policies/meet_most.py) does not: there the met requests sit at their cheapest option with
no margin, the others fall behind, and both need more a step later.

The search (as meet_most's): for each candidate step length s, every request starts at its
first (cheapest) option and upgrades are bought by the most expected requests per token of
work (the upper hull of each request's (work, P) at s), while the step stays <= s and the
batch's tokens per second stays >= floor; the best s by expected requests met, evaluated at
the step the chosen work actually makes, wins.

Cost: O(candidate steps x requests x options x log).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

SQRT2 = math.sqrt(2.0)  # p_met's, once (asked ~300 times a select at 64 tight)
K = TypeVar("K", bound=Hashable)
Opt = TypeVar("Opt")


@dataclass(slots=True)  # not frozen: ~20 built a select, and a frozen init costs ~6x
class Pace(Generic[Opt]):
    option: Opt
    work: int  # tokens it puts in the batch per forward
    rate: float  # tokens per forward
    spread: float  # relative spread of its mean time per token over the remaining tokens

    def __post_init__(self) -> None:
        if self.work < 1 or self.rate <= 0 or self.spread <= 0:
            raise ValueError(f"a pace of {self.work} tokens at {self.rate}/forward, "
                             f"spread {self.spread}")

    def p_met(self, step: float, need: float) -> float:
        """Probability that the request meets `need` seconds per token at this step."""
        if need == math.inf:
            return 1.0
        z = (1.0 - step / (need * self.rate)) / self.spread
        return 0.5 * (1.0 + math.erf(z / SQRT2))


@dataclass(slots=True)  # as Pace
class Request(Generic[K, Opt]):
    key: K
    need: float  # seconds per token it may take from now on (raw, no safety margin)
    paces: tuple[Pace[Opt], ...]  # the first is where it starts (AR: the least work)
    # Indices into paces grouped by equal work, least work first, each group in index
    # order: _hull's candidates at any step (work does not depend on the step; sorted once
    # here, not once per candidate step).
    by_work: tuple[tuple[int, ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.paces:
            raise ValueError(f"{self.key}: no options")
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(self.paces):
            groups.setdefault(p.work, []).append(i)
        self.by_work = tuple(tuple(groups[w]) for w in sorted(groups))


def spread_of(cv: float, tokens_per_iteration: float, remaining: int, floor: float) -> float:
    """Relative spread of the mean time per token over `remaining` tokens."""
    iterations = max(1.0, remaining / max(tokens_per_iteration, 1e-9))
    return math.hypot(cv / math.sqrt(iterations), floor)


def expected_met(requests: Sequence[Request[K, Opt]], choice: dict[K, Pace[Opt]],
                 step: float) -> float:
    erf, inf = math.erf, math.inf  # Pace.p_met, inlined (the search's sum, 17x a search)
    return sum([1.0 if r.need == inf else 0.5 * (1.0 + erf(
        (1.0 - step / (r.need * (p := choice[r.key]).rate)) / p.spread / SQRT2))
        for r in requests])


def most_expected(requests: Sequence[Request[K, Opt]], base_tokens: int,
                  step_of: Callable[[int], float], max_tokens: int, base_rate: float = 0.0,
                  floor: float = 0.0, num_steps: int = 16) -> tuple[dict[K, Opt], float]:
    """(option per request, expected requests met). base_tokens, base_rate: the batch's work
    and tokens per forward with every request at its first pace."""
    start = {r.key: r.paces[0] for r in requests}
    lo = step_of(base_tokens)
    extra = sum(max(p.work for p in r.paces) - r.paces[0].work for r in requests)
    hi = step_of(min(max_tokens, base_tokens + extra))
    best = (expected_met(requests, start, lo), start)
    # A choice met again at a longer bound cannot win now if it did not then (best only
    # grows): its value is not summed again (most bounds repeat one of a few choices).
    seen = {tuple(map(id, start.values()))}
    for i in range(1, num_steps + 1):
        bound = lo + (hi - lo) * i / num_steps
        choice, tokens = _fill(requests, start, bound, base_tokens, step_of, max_tokens,
                               base_rate, floor)
        key = tuple(map(id, choice.values()))
        if key in seen:
            continue
        seen.add(key)
        value = expected_met(requests, choice, step_of(tokens))
        if value > best[0] + 1e-9:
            best = (value, choice)
    return {k: p.option for k, p in best[1].items()}, best[0]


def _fill(requests: Sequence[Request[K, Opt]], start: dict[K, Pace[Opt]], bound: float,
          base_tokens: int, step_of: Callable[[int], float], max_tokens: int,
          base_rate: float, floor: float) -> tuple[dict[K, Pace[Opt]], int]:
    """Upgrades bought by expected requests met per token of work, while the step stays
    <= bound."""
    steps = []  # (gain per token, order, key, pace): each request's hull, in order
    for r in requests:
        paces = r.paces
        if len(paces) == 1:
            continue  # nothing to buy (a request counted at AR only)
        hull, met = _hull(r, bound)
        for n in range(len(hull) - 1):
            a, b = hull[n], hull[n + 1]
            steps.append(((met[b] - met[a]) / max(1, paces[b].work - paces[a].work), n,
                          r.key, paces[b]))
    steps.sort(key=lambda x: (-x[0], x[1]))
    choice, tokens, rate = dict(start), base_tokens, base_rate
    for gain, _, key, pace in steps:
        current = choice[key]
        if gain <= 0 or pace.work <= current.work:
            continue
        new_tokens = tokens + pace.work - current.work
        new_rate = rate + pace.rate - current.rate
        new_step = step_of(new_tokens)
        if new_tokens > max_tokens or new_step > bound or new_rate / new_step < floor:
            continue
        choice[key], tokens, rate = pace, new_tokens, new_rate
    return choice, tokens


def _hull(r: Request[K, Opt], step: float) -> tuple[list[int], list[float]]:
    """The indices into r.paces of the paces on the upper concave hull of (work, P(met)) at
    step, by work, and each pace's P(met) at step (Pace.p_met, inlined: the search's inner
    loop, 16 steps x requests x options a select)."""
    paces, need = r.paces, r.need
    if need == math.inf:
        met = [1.0] * len(paces)
    else:
        erf = math.erf
        met = [0.5 * (1.0 + erf((1.0 - step / (need * p.rate)) / p.spread / SQRT2))
               for p in paces]
    work = [p.work for p in paces]
    hull = [0]
    # By work, and within equal work the most P first (the first index among equal P):
    # the others of a work are never on the hull.
    for group in r.by_work:
        i = group[0] if len(group) == 1 else max(group, key=met.__getitem__)
        last = hull[-1]
        if work[i] <= work[last] or met[i] <= met[last]:
            continue
        while len(hull) >= 2 and ((met[hull[-1]] - met[hull[-2]])
                                  / max(1, work[hull[-1]] - work[hull[-2]])
                                  <= (met[i] - met[hull[-1]]) / max(1, work[i] - work[hull[-1]])):
            hull.pop()
        hull.append(i)
    return hull, met
