"""Pipelined speculation as one more option of the SLO selector where a deployment has a
draft pool: its prior comes from linear speculation's iterations, its step is the longer of
the two pools', and auto takes it where it meets an SLO no fused option meets, not under
load."""

from __future__ import annotations

from policies.option import AR, CANDIDATES, LINEAR, PIPELINED, PIPELINED_CANDIDATES, Option
from policies.pipelined import pipelined_trace, tokens_per_step
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.selector import SelectorConfig
from tests.policies.helpers import step_s, view

LINEAR4 = Option(LINEAR, 4)
PIPELINED4 = Option(PIPELINED, 4)


def test_full_acceptance_saves_the_next_draft_step() -> None:
    # Linear iterations: 2 forwards each. Pipelined: 2 steps for the first and after a
    # partial acceptance, 1 after a full one (4 tokens at B = 4: 3 drafts + the bonus).
    assert pipelined_trace([(2, 4), (2, 4), (2, 2), (2, 4), (2, 1)], 4) == [
        (2, 4), (1, 4), (1, 2), (2, 4), (1, 1)]
    traces = {LINEAR4: [[(2, 4), (2, 4), (2, 2)]]}
    assert tokens_per_step(traces) == {PIPELINED4: 10 / 4}


def _profile() -> Profile:
    points = [(t, r, step_s(t, r)) for t, r in
              [(1, 1), (8, 1), (20, 1), (72, 1), (8, 8), (32, 32), (64, 64), (160, 8),
               (256, 16), (512, 32)]]
    # 7 of 10 linear B=4 iterations accept the whole block: 1.7 tokens per forward fused,
    # 34 tokens in 13 steps pipelined.
    linear = [[(2, 4)] * 7 + [(2, 2)] * 3]
    quadratic = [[(1, 2)] * 10]
    return Profile(points, {LINEAR4: linear, Option("spec_quadratic", 2): quadratic,
                            Option("spec_quadratic", 3): quadratic})


def _policy(draft_pool: bool) -> SLOPolicy:
    pool = CANDIDATES + (PIPELINED_CANDIDATES if draft_pool else ())
    return SLOPolicy(_profile(), PolicyConfig(selector=SelectorConfig(pool=pool)))


def test_auto_uses_the_draft_pool_for_an_slo_no_fused_option_meets() -> None:
    # Alone: linear B=4 9.1 ms / 1.7 = 5.4 ms per token, quadratic B=2 (6 tokens) 9.5 ms
    # / 2 = 4.8 ms less its first draft pass; pipelined B=4: the draft pool's 8 tokens are
    # the longer step, 9.9 ms / (34/13) = 3.8 ms. A 5 ms TPOT (4.25 ms with the margin):
    hot = view("hot", tpot_ms=5.0, max_tokens=200)
    assert _policy(draft_pool=True).select([hot], now=0.0)["hot"] == PIPELINED4
    assert _policy(draft_pool=False).select([hot], now=0.0)["hot"].mode != PIPELINED


def test_under_load_slack_requests_stay_in_ar_with_a_draft_pool() -> None:
    views = [view(f"r{i}", deadline_ms=60_000.0) for i in range(48)]
    choice = _policy(draft_pool=True).select(views, now=0.0)
    assert {o.mode for o in choice.values()} == {AR}


def test_the_draft_pool_step_counts_when_it_is_the_longer_one() -> None:
    p = _policy(draft_pool=True)
    sel = p.selector
    sel.select([view("a", tpot_ms=5.0, max_tokens=200)], now=0.0)
    assert sel._step(4, 8) == sel._step(8, 0) > sel._step(4, 0)  # noqa: SLF001
