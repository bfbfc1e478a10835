"""Which requests can meet their SLO together this step, and with which options.

Requests share one step: a request meets its pace when step <= its need x its tokens per
forward under its option, and every option's work lengthens the step for all. For a
candidate step length s, each request that can meet s takes its cheapest option that does;
then the requests are admitted cheapest first while the step their work makes stays <= s.
The best s (most requests met; ties: the least work) over the steps that some request's
options bound is the answer. A request left out runs its fallback (AR) this step.

  menu of a request: (work tokens, longest step it meets at, option, tokens per forward),
  Pareto-pruned: more work only for a longer step; its fallback is what it costs and emits
  when not met (AR: 1 and 1).
A request whose option would bring the batch's tokens per second under `floor` is left
out: on a device where extra tokens are expensive, speculating for one request at risk
can slow the others into missing (the selector's `rescue_loss`).

Cost: O(candidate steps x requests x menu length); the candidates are capped at
`max_steps`, spread over the sorted bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Opt = TypeVar("Opt")
Choice = tuple[int, float, Opt, float]  # (work, longest step that meets it, option, rate)


@dataclass(frozen=True)
class Menu(Generic[K, Opt]):
    key: K
    fallback: tuple[int, float]  # (work, tokens per forward) when not met
    choices: tuple[Choice[Opt], ...]

    @staticmethod
    def pruned(key: K, fallback: tuple[int, float], choices: Sequence[Choice[Opt]]
               ) -> Menu[K, Opt]:
        """Only the options worth their work: by work, each one must meet a longer step."""
        out: list[Choice[Opt]] = []
        for c in sorted(choices, key=lambda c: (c[0], -c[1])):
            if not out or c[1] > out[-1][1]:
                out.append(c)
        return Menu(key, fallback, tuple(out))

    def cheapest(self, step: float) -> Choice[Opt] | None:
        for choice in self.choices:
            if choice[1] >= step:
                return choice
        return None


def meet_most(menus: Sequence[Menu[K, Opt]], base_tokens: int, step_of: Callable[[int], float],
              max_tokens: int, base_rate: float = 0.0, floor: float = 0.0,
              max_steps: int = 24) -> dict[K, Opt]:
    """The options of the requests to meet (the others are left out). base_tokens and
    base_rate: the batch's work and tokens per forward with every menu request at its
    fallback; floor: the least tokens per second the batch may drop to."""
    shortest = step_of(base_tokens)
    bounds = sorted({c[1] for m in menus for c in m.choices if c[1] >= shortest})
    if len(bounds) > max_steps:
        bounds = [bounds[round(i * (len(bounds) - 1) / (max_steps - 1))]
                  for i in range(max_steps)]
    best: dict[K, Opt] = {}
    best_score = (0, 0)
    for step in bounds:
        extra = []
        for m in menus:
            pick = m.cheapest(step)
            if pick is not None:
                extra.append((pick[0] - m.fallback[0], pick[3] - m.fallback[1], m.key,
                              pick[2]))
        extra.sort(key=lambda e: e[0])
        tokens, rate, chosen = base_tokens, base_rate, {}
        for work, gain, key, option in extra:
            new_step = step_of(tokens + work)
            if tokens + work > max_tokens or new_step > step:
                break
            if (rate + gain) / new_step < floor:
                continue
            tokens, rate = tokens + work, rate + gain
            chosen[key] = option
        score = (len(chosen), -tokens)
        if score > best_score:
            best, best_score = chosen, score
    return best
