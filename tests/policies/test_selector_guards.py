"""The selector's guard list (kept sorted between switches, policies/selector.py) answers
what the plain scans over every request it replaced answer."""

from __future__ import annotations

import random
from dataclasses import replace

from policies.policy import SLOPolicy
from policies.preemption import slack_of
from tests.policies.helpers import synthetic_profile, view


def batch(rng: random.Random, n: int) -> list:
    kinds = ({"tpot_ms": 12.0}, {"tpot_ms": 18.0}, {"tpot_ms": 30.0},
             {"deadline_ms": 60_000.0}, {})
    return [replace(view(f"r{i}", max_tokens=rng.randint(12, 80), num_output=rng.randint(1, 10),
                         **rng.choice(kinds)), priority=rng.choice((0, 0, 1)))
            for i in range(n)]


def limits(sel, step: float) -> dict:
    return {o: sel._limit(o, step) for o in sel._slots}


def test_breaks_cap_and_slack_match_plain_scans():
    rng = random.Random(3)
    for n in (5, 24, 48):
        policy = SLOPolicy(synthetic_profile())
        sel = policy.selector
        sel.select(batch(rng, n), now=0.0)
        for s in sel._slots:
            p = s.view.priority
            guarded = sel._guarded(s, p)
            before = limits(sel, sel._step())
            plain = [(o, lim) for o, lim in before.items()
                     if o is not s and lim is not None and o.view.priority >= p]
            assert sel._cap(guarded) == min((lim * o.rate for o, lim in plain),
                                            default=float("inf"))
            for option in sel._options(s.view):
                mark, saved = len(sel._journal), (sel._tokens, sel._draft_tokens,
                                                  sel._rate_sum, sel._version)
                sel._switch(s, option)
                step = sel._step()
                want = [o for o, lim in plain if step / o.rate > lim]
                assert sel._breaks(guarded) == bool(want)
                assert sel._others_have_slack(s) == _plain_slack(sel, s)
                sel._undo(mark, saved)
                assert limits(sel, sel._step()) == before


def _plain_slack(sel, s) -> bool:
    step = sel._step()
    spare = sel.config.rescue_slack_steps * step
    return all(slack_of(o.view, sel._now, step / o.rate) >= spare
               for o in sel._slots if o is not s)
