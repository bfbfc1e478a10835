"""ModeSelector.may_speed_up: the decision cache keeps a request met at AR when the batch
shrank unless pass 3 could move it (policies/decision_cache.py); the bound must never say
no where pass 3 (_speed_up) would move it, and must say no under load."""

from __future__ import annotations

import math
import random

from policies.option import AR1, Option
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.selector import ModeSelector, SelectorConfig
from tests.policies.helpers import synthetic_profile, view

L8, Q4 = Option("spec_linear", 8), Option("spec_quadratic", 4)
GPU = [(t, r, 0.004 + 0.00002 * t + 0.000005 * r) for t, r in
       [(1, 1), (8, 1), (20, 1), (72, 1), (8, 8), (32, 32), (64, 64), (160, 8), (256, 16),
        (640, 32)]]


def _selector(profile: Profile) -> ModeSelector:
    p = SLOPolicy(profile)
    return ModeSelector(p.cost, p.acceptance, SelectorConfig(uniform_speed_up=False))


def _counts(sel: ModeSelector, rng: random.Random, n: int) -> tuple[int, int, int]:
    """(moved, said yes, said no) over the free requests of a select, each put back at AR
    and asked alone against the batch as chosen; fails where pass 3 moves one the bound
    rules out."""
    views = [view(f"r{i}", 1.0, max_tokens=rng.randint(20, 200), num_output=rng.randint(1, 9),
                  deadline_ms=rng.choice((60_000.0, 120_000.0))) for i in range(n)]
    sel.select(views, 1.0)
    moved = yes = no = 0
    for s in list(sel._slots):
        if not s.is_free:
            continue
        mark, saved = len(sel._journal), (sel._tokens, sel._draft_tokens, sel._rate_sum,
                                          sel._version)
        if s.option != AR1:
            sel._switch(s, AR1)
        may = sel.may_speed_up(s.view, sel._rate_sum)
        if sel._speed_up(s, math.inf):
            moved += 1
            assert may, f"pass 3 moved {s.view.id} ({n} requests) where may_speed_up said no"
        sel._undo(mark, saved)
        yes, no = yes + may, no + (not may)
    return moved, yes, no


def test_may_speed_up_never_rules_out_a_move_of_pass_3_and_rules_out_most_under_load():
    rng = random.Random(5)
    traces = {L8: [[(2, 5)] * 20] * 4, Q4: [[(1, 3)] * 20] * 4}
    totals = {"moved": 0, "light_no": 0, "loaded_no": 0, "loaded": 0}
    for profile in (Profile(GPU, traces), synthetic_profile()):
        for n in (1, 2, 3, 4, 6, 8, 16, 32, 48):
            moved, yes, no = _counts(_selector(profile), rng, n)
            totals["moved"] += moved
            if n <= 2:
                totals["light_no"] += no
            if n >= 32:
                totals["loaded"] += yes + no
                totals["loaded_no"] += no
    assert totals["moved"] >= 2  # the check above was exercised
    assert totals["light_no"] == 0  # one or two requests: spare compute may move either
    assert totals["loaded_no"] >= 0.9 * totals["loaded"] > 0  # under load: kept, not asked
