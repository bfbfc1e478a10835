"""SLOPolicy._keep_lost_options (SelectorConfig.lost_keeps_option): where every decoder is
lost (no option meets it even alone) and nobody waits or prefills, one that the selector
moves from speculation to AR keeps the option it runs; beside a request that can still be
met, or with one waiting, it goes to AR. Admission counts lost requests at AR's work where
every one running is lost, and as they run beside a hopeful one."""

from __future__ import annotations

from dataclasses import replace

from policies.decision import SchedulerView
from policies.option import AR1, Option
from policies.policy import PolicyConfig, SLOPolicy
from tests.policies.helpers import synthetic_profile, view

NOW = 1.0
LINEAR8 = Option("spec_linear", 8)


def _lost(p: SLOPolicy, rid: str = "lost"):  # noqa: ANN202
    """Behind a TPOT bound that even the fastest option alone misses, running linear
    speculation whose drafts were rejected three iterations in a row: the selector's best
    use of it is AR (its spare compute buys tokens per second, and AR gives the most)."""
    ar_ms = p.cost.predict(1, 1) * 1e3
    for _ in range(3):
        p.observe_request(rid, LINEAR8, 2, 1)
    v = view(rid, now=NOW, tpot_ms=0.3 * ar_ms, max_tokens=60, num_output=20)
    return replace(v, first_token_s=NOW - 0.2 * ar_ms / 1e3, option=LINEAR8)


def _plan(p: SLOPolicy, running, waiting=()):  # noqa: ANN001, ANN202
    return p.plan(SchedulerView(tuple(running), tuple(waiting), 2048, 64, 1024), NOW).options


def _off() -> PolicyConfig:
    config = PolicyConfig()
    return replace(config, selector=replace(config.selector, lost_keeps_option=False))


def test_a_lost_request_alone_keeps_its_speculation():
    p = SLOPolicy(synthetic_profile())
    assert _plan(p, [_lost(p)])["lost"] == LINEAR8
    assert p.decisions.kept["lost"].is_lost
    q = SLOPolicy(synthetic_profile(), _off())
    assert _plan(q, [_lost(q)])["lost"] == AR1  # what the selector gives it


def test_lost_requests_together_keep_theirs_and_one_at_ar_stays_there():
    p = SLOPolicy(synthetic_profile())
    at_ar = replace(_lost(p, "b"), option=AR1)
    options = _plan(p, [_lost(p, "a"), at_ar])
    assert options == {"a": LINEAR8, "b": AR1}


def test_beside_a_request_that_can_be_met_or_one_waiting_a_lost_one_goes_to_ar():
    p = SLOPolicy(synthetic_profile())
    hopeful = view("hopeful", now=NOW, deadline_ms=600_000.0, arrival_s=0.9)
    assert _plan(p, [_lost(p), hopeful])["lost"] == AR1
    assert not p.decisions.kept["hopeful"].is_lost
    p = SLOPolicy(synthetic_profile())
    newcomer = view("new", now=NOW, tpot_ms=50.0, num_output=0, arrival_s=NOW)
    assert _plan(p, [_lost(p)], [newcomer])["lost"] == AR1


def test_admission_counts_a_lost_request_alone_at_ars_work():
    """A newcomer beside a lost request still speculating is judged as beside one at AR:
    the lost one may go to AR as soon as the newcomer runs."""
    p = SLOPolicy(synthetic_profile())
    lost = _lost(p)
    _plan(p, [lost])
    beside_ar_ms = p.cost.predict(2, 2) * 1e3  # two requests at AR
    newcomer = view("new", now=NOW, tpot_ms=1.03 * beside_ar_ms, num_output=0, arrival_s=NOW)
    assert p.admit(newcomer, NOW, [lost]) is None
    q = SLOPolicy(synthetic_profile(), _off())
    q.decisions.kept = p.decisions.kept  # the same lost record, rule off: counted at its work
    assert q.admit(newcomer, NOW, [lost]) is not None


def test_beside_a_hopeful_request_admission_counts_a_lost_one_as_it_runs():
    """With a hopeful request running, the selector ran the lost one as it liked before
    the newcomer came: it is counted at its option's work, and a newcomer whose bound
    holds only if the lost one were at AR is refused."""
    p = SLOPolicy(synthetic_profile())
    lost = _lost(p)
    ar_ms = p.cost.predict(1, 1) * 1e3
    hopeful = view("hopeful", now=NOW, tpot_ms=1.1 * ar_ms, max_tokens=64, num_output=2)
    _plan(p, [lost, hopeful])
    assert p.decisions.kept["lost"].is_lost and not p.decisions.kept["hopeful"].is_lost
    beside_ar_ms = p.cost.predict(3, 3) * 1e3  # all three at AR
    newcomer = view("new", now=NOW, tpot_ms=1.03 * beside_ar_ms, num_output=0, arrival_s=NOW)
    assert p.admit(newcomer, NOW, [lost, hopeful]) is not None
    assert p.admit(newcomer, NOW, [lost]) is None  # alone it is counted at AR's work
