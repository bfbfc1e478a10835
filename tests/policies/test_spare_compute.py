"""Pass 3 of the selector (spare compute buys speed): it moves every free request to one
option where only all of them together gain, and it keeps a margin below each request's
limit."""

from __future__ import annotations

from policies.option import AR1, Option
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.selector import ModeSelector, SelectorConfig
from tests.policies.helpers import synthetic_profile, view

L8, Q4 = Option("spec_linear", 8), Option("spec_quadratic", 4)
# A GPU-shaped device: 4 ms a step, 0.02 ms a token, 0.005 ms a request.
GPU = [(t, r, 0.004 + 0.00002 * t + 0.000005 * r) for t, r in
       [(1, 1), (8, 1), (20, 1), (72, 1), (8, 8), (32, 32), (64, 64), (160, 8), (256, 16),
        (640, 32)]]


def _selector(profile: Profile, **config: object) -> ModeSelector:
    p = SLOPolicy(profile)
    return ModeSelector(p.cost, p.acceptance, SelectorConfig(**config))  # type: ignore[arg-type]


def test_all_free_requests_move_together_where_one_alone_gains_too_little() -> None:
    # 30 requests with far deadlines: one at linear B=8 (2.5 tokens a forward, 8 tokens of
    # work) raises the batch's tokens per second ~2 %, all of them ~30 %: a fixed
    # spec_linear would win unless the pass tries the option for all at once.
    traces = {L8: [[(2, 5)] * 20] * 4, Q4: [[(1, 3)] * 20] * 4}
    views = [view(f"b{i}", 1.0, deadline_ms=60_000) for i in range(30)]
    alone = _selector(Profile(GPU, traces), uniform_speed_up=False).select(views, 1.0)
    together = _selector(Profile(GPU, traces)).select(views, 1.0)
    assert set(alone.values()) == {AR1}
    assert set(together.values()) == {L8}


def test_spare_compute_keeps_a_margin_below_every_limit() -> None:
    # On the CPU-like synthetic device (8 ms + 0.2 ms a token + 0.3 ms a request) a free
    # request speculating lengthens the step from 9 ms to 9.6-11.2 ms: within the 14 ms
    # bound of its neighbour (x 0.85 safety: 11.9 ms), but not within 0.7 of it.
    bounded = view("bounded", 1.0, tpot_ms=14.0)
    bounded.fixed = bounded.option = AR1  # it asked for AR: only the free one may move
    views = [bounded, view("free", 1.0)]
    edge = _selector(synthetic_profile(), spare_margin=1.0).select(views, 1.0)
    margin = _selector(synthetic_profile()).select(views, 1.0)
    assert edge["free"] != AR1
    assert margin == {"bounded": AR1, "free": AR1}
