import math
import random
import statistics

import pytest

from policies.acceptance import AcceptanceEstimator
from policies.cost_model import CostModel
from policies.option import Option
from tests.policies.helpers import A, B, C, step_s, synthetic_profile

Q4 = Option("spec_quadratic", 4)
L8 = Option("spec_linear", 8)


def test_cost_model_recovers_the_profile_and_follows_the_machine():
    m = CostModel(synthetic_profile().cost)
    assert m.coef.intercept_s == pytest.approx(A, rel=1e-6)
    assert m.coef.per_token_s == pytest.approx(B, rel=1e-6)
    assert m.coef.per_request_s == pytest.approx(C, rel=1e-6)
    for i in range(300):  # the machine became twice as slow
        tokens, reqs = 1 + 7 * (i % 20), 1 + i % 8
        m.observe(tokens, reqs, 2 * step_s(tokens, reqs))
    assert 1.6 < m.predict(40, 4) / step_s(40, 4) < 2.1  # most of the way, the prior holds


def test_cost_model_follows_a_slower_machine_on_steps_of_one_token_each():
    """A machine 2.3x slower than its profile runs only AR steps (tokens == requests: they
    say nothing about the multi-token term). The prior moves with it: before, the prior's
    multi-token points looked cheap next to those steps, every refit had d < 0 and was
    discarded, and the model stayed at the profile (ratio 2.3 for ever)."""
    def profile_s(tokens: int, requests: int) -> float:
        return step_s(tokens, requests) + (0.002 if tokens > requests else 0.0)

    points = [(t, r, profile_s(t, r)) for t, r in
              [(1, 1), (8, 1), (20, 1), (72, 1), (8, 8), (32, 32), (64, 64), (12, 9),
               (16, 4), (24, 8), (256, 16), (512, 32)]]
    m = CostModel(points)
    for i in range(300):
        n = 4 + i % 24
        m.observe(n, n, 2.3 * profile_s(n, n))
    assert m.machine_scale() == pytest.approx((50 + 256 * 2.3) / (50 + 256))  # 2.09
    for tokens, reqs in ((20, 20), (12, 9), (40, 12)):  # AR, one spec request, several
        assert 2.0 < m.predict(tokens, reqs) / profile_s(tokens, reqs) < 2.4


def test_cost_model_predicts_the_mean_step_under_noise():
    """Steps spread around the profile (lognormal 0.3, as a shared CPU's): the fit follows
    their mean, what a request's time per token adds up to (weighting errors by the measured
    step instead put it ~20 % under)."""
    rng = random.Random(0)
    m = CostModel(synthetic_profile().cost)
    ratios = []
    for i in range(800):
        tokens, reqs = 1 + 7 * (i % 20), 1 + i % 8
        seconds = step_s(tokens, reqs) * math.exp(rng.gauss(0.0, 0.3) - 0.3**2 / 2)  # mean 1
        if i >= 300:
            ratios.append(seconds / m.predict(tokens, reqs))
        m.observe(tokens, reqs, seconds)
    assert statistics.fmean(ratios) == pytest.approx(1.0, abs=0.04)


def test_cost_model_clips_outliers():
    m = CostModel(synthetic_profile().cost)
    m.observe(20, 1, 100.0)  # a 100 s step: a pause, not the device
    assert m.predict(20, 1) < 2 * step_s(20, 1)


def test_acceptance_starts_at_the_prior_and_moves_per_request():
    est = AcceptanceEstimator({Q4: 2.2, L8: 1.8})
    assert est.tokens_per_forward(Q4) == pytest.approx(2.2)
    assert est.tokens_per_forward(Option("ar")) == 1.0
    for _ in range(50):
        est.observe("easy", Q4, 1, 4)  # this request accepts most drafts
        est.observe("hard", Q4, 1, 1)  # this one none
    assert est.tokens_per_forward(Q4, "easy") > 3.5
    assert est.tokens_per_forward(Q4, "hard") < 1.3
    assert est.tokens_per_forward(Q4, "new") == est.tokens_per_forward(Q4)
    # What they showed under quadratic carries over to linear, which neither ran.
    assert est.tokens_per_forward(L8, "easy") > 1.3 * est.tokens_per_forward(L8)
    assert est.tokens_per_forward(L8, "hard") < 0.7 * est.tokens_per_forward(L8)
    est.forget("easy")
    assert est.tokens_per_forward(Q4, "easy") == est.tokens_per_forward(Q4)


def test_acceptance_counts_whole_iterations():
    est = AcceptanceEstimator({L8: 1.8})
    for _ in range(30):  # a draft pass that emits nothing, then a verify pass emitting 4
        est.observe("r", L8, 1, 0)
        assert est.tokens_per_forward(L8, "r") == pytest.approx(
            est.tokens_per_forward(L8) * est.factor("r"))
        est.observe("r", L8, 1, 4)
    assert est.tokens_per_forward(L8) == pytest.approx(2.0, rel=0.1)
    assert est.factor("r") > 1.0


def test_blocks_without_a_trace_are_priced_on_the_mode_s_curve():
    # Quadratic at B=2/3/4 in the profile; B=6 and B=8 priced on the fitted curve.
    est = AcceptanceEstimator({Option("spec_quadratic", 2): 1.6,
                               Option("spec_quadratic", 3): 2.0, Q4: 2.2})
    q6, q8 = Option("spec_quadratic", 6), Option("spec_quadratic", 8)
    assert est.tokens_per_forward(Q4) < est.tokens_per_forward(q6) < est.tokens_per_forward(q8)
    assert est.tokens_per_forward(q8) < 2.2 * 1.3  # diminishing: alpha ~0.6


def test_acceptance_unknown_option_uses_the_default():
    est = AcceptanceEstimator({})
    assert est.tokens_per_forward(Option("spec_linear", 16)) == 1.0
