"""Block length and diffusion threshold chosen per request from its own acceptance, within
the config's bounds (policies/bounds.py, policies/selector.py)."""

from __future__ import annotations

import pytest

from policies.bounds import BoundsError, choose_threshold
from policies.option import AR, DIFFUSION, LINEAR, Option
from policies.policy import PolicyConfig, SLOPolicy
from policies.selector import SelectorConfig
from tests.policies.helpers import synthetic_profile, view


def learned(config: SelectorConfig | None = None) -> SLOPolicy:
    """A policy that has seen "hi" accept almost every draft and "lo" almost none."""
    p = SLOPolicy(synthetic_profile(), PolicyConfig(selector=config or SelectorConfig()))
    for _ in range(30):
        p.observe_request("hi", Option(LINEAR, 8), 2, 14)
        p.observe_request("lo", Option(LINEAR, 8), 2, 2)
    return p


def test_high_acceptance_gets_a_longer_block_than_low_within_the_bounds():
    bounds = (("spec_linear", 4, 8), ("spec_quadratic", 2, 4), ("diffusion", 8, 16))
    p = learned(SelectorConfig(block_bounds=bounds))
    hi = p.selector.select([view("hi", max_tokens=200)], now=0.0)["hi"]
    lo = p.selector.select([view("lo", max_tokens=200)], now=0.0)["lo"]
    assert hi.mode != AR and hi.block > lo.block
    assert hi.block <= dict((m, h) for m, _, h in bounds)[hi.mode]
    # Tighter bounds: the same request's block stays inside them.
    p = learned(SelectorConfig(block_bounds=(("spec_linear", 4, 4), ("spec_quadratic", 2, 2))))
    assert p.selector.select([view("hi", max_tokens=200)], now=0.0)["hi"].block <= 4


def test_diffusion_threshold_follows_the_request_acceptance_within_the_bounds():
    p = learned(SelectorConfig(threshold_bounds=(0.6, 0.9)))
    options = {"hi": Option(DIFFUSION, 8), "lo": Option(DIFFUSION, 8), "new": Option(DIFFUSION, 8)}
    views = [view(k) for k in options]
    t = p.thresholds(views, options)
    assert t["lo"] == 0.6 and t["hi"] == 0.9  # factors 0.43 and 2.96: the two bounds
    assert 0.6 < t["new"] < 0.9  # no evidence yet: factor 1, in between
    pinned = view("pinned")
    pinned.fixed = Option(DIFFUSION, 8)  # asked for diffusion: keeps its own threshold
    assert p.thresholds([pinned], {"pinned": pinned.fixed}) == {}
    assert p.thresholds([view("ar")], {"ar": Option(AR)}) == {}


def test_choose_threshold_stays_in_the_bounds():
    for factor in (0.0, 0.3, 0.5, 0.77, 1.0, 1.49, 3.0, 100.0):
        assert 0.705 <= choose_threshold(factor, (0.705, 0.915)) <= 0.915


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"threshold_bounds": (0.5, 1.2)}, "SelectorConfig.threshold_bounds"),
    ({"threshold_bounds": (0.9, 0.8)}, "SelectorConfig.threshold_bounds"),
    ({"threshold_bounds": (0.0, 0.8)}, "SelectorConfig.threshold_bounds"),
    ({"block_bounds": (("spec_linear", 4, 99),)}, "SelectorConfig.block_bounds[0]"),
    ({"block_bounds": (("spec_linear", 4, 8), ("spec_quadratic", 6, 2))},
     "SelectorConfig.block_bounds[1]"),
    ({"block_bounds": (("ar", 1, 1),)}, "SelectorConfig.block_bounds[0]"),
    ({"block_bounds": (("warp", 2, 4),)}, "SelectorConfig.block_bounds[0]"),
])
def test_out_of_bounds_config_is_refused_naming_the_field(kwargs, field):  # noqa: ANN001
    with pytest.raises(BoundsError) as e:
        SelectorConfig(**kwargs)
    assert e.value.field == field
