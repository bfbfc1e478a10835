"""The rules that decide tight SLOs (bounds below AR's pace): the per-request acceptance
prior from the profile, quadratic's entry pass kept out of acceptance and its stay learnt,
the uniform start of the search and its upgrades within that mode, and admission on what
auto requests actually run."""

from __future__ import annotations

import random

import pytest

from policies.decision import StepRecord, WorkRecord
from policies.entry_stay import EntryStay
from policies.loss_budget import Payer, loss_budget
from policies.modes import ChunkKind
from policies.option import AR1, Option
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.request_view import RequestView
from policies.selector import QUAD_HORIZON, ModeSelector, SelectorConfig
from policies.slo import SLO
from tests.policies.helpers import synthetic_profile, view

Q4, Q6, L8 = (Option("spec_quadratic", 4), Option("spec_quadratic", 6),
              Option("spec_linear", 8))
# A GPU-shaped device: 4 ms a step, 0.02 ms a token, 0.005 ms a request.
GPU = [(t, r, 0.004 + 0.00002 * t + 0.000005 * r) for t, r in
       [(1, 1), (8, 1), (20, 1), (72, 1), (8, 8), (32, 32), (64, 64), (160, 8), (256, 16)]]


def _traces(spread: float, seed: int = 0) -> dict[Option, list[list[tuple[int, int]]]]:
    """Quadratic B=4 iterations of 16 prompts, each prompt accepting drafts at its own
    mean (scattered by `spread`), one iteration's tokens random around it."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(16):
        mean = min(4.0, max(1.0, rng.gauss(2.5, spread)))
        prompts.append([(1, min(4, max(1, round(rng.gauss(mean, 1.0))))) for _ in range(40)])
    return {Q4: prompts}


def test_the_request_prior_follows_how_much_prompts_differ() -> None:
    alike = Profile(GPU, _traces(spread=0.05)).request_prior_tokens()
    apart = Profile(GPU, _traces(spread=1.0)).request_prior_tokens()
    assert apart < 5.0 < 20.0 < alike  # one bad iteration is luck where prompts are alike
    assert Profile(GPU, {}).request_prior_tokens() == 6.0  # no traces: the old default


def test_quadratic_entry_pass_is_not_counted_as_bad_acceptance() -> None:
    p = SLOPolicy(synthetic_profile())
    before = p.acceptance.tokens_per_forward(Q4, "r")
    draft = WorkRecord("r", ChunkKind.DRAFT, Q4, 4, 0)  # the entry pass: nothing emitted
    p.learn(StepRecord(4, 1, 0.01, (draft,)))
    quad = WorkRecord("r", ChunkKind.QUADRATIC, Q4, 20, 2)  # then a forward emitting 2.2-ish
    p.learn(StepRecord(20, 1, 0.01, (quad,)))
    # Counted, the two forwards would read as 1 token per forward: a factor far below 1.
    assert p.acceptance.tokens_per_forward(Q4, "r") > 0.85 * before


def _tight(rid: str, now: float, tpot_ms: float) -> RequestView:
    return view(rid, now, tpot_ms=tpot_ms, max_tokens=32, arrival_s=now - 0.004)


def test_tight_requests_all_speculate_when_the_device_has_room() -> None:
    # Five requests whose bound (3 ms) AR alone (4 ms) misses: on a GPU-shaped device
    # every one of them gets a speculative option; none is left behind at AR.
    traces = {Q4: [[(1, 3)] * 20] * 4, L8: [[(2, 5)] * 20] * 4}
    p = SLOPolicy(Profile(GPU, traces))
    views = [_tight(f"t{i}", 1.0, 3.0) for i in range(5)]
    options = p.select(views, 1.0)
    assert all(o is not None and o != AR1 for o in options.values())


def test_admission_counts_running_auto_requests_at_the_option_they_run() -> None:
    traces = {Q4: [[(1, 3)] * 20] * 4, L8: [[(2, 5)] * 20] * 4}
    p = SLOPolicy(Profile(GPU, traces))
    running = [_tight(f"t{i}", 1.0, 3.0) for i in range(40)]
    newcomer = view("new", 1.0, tpot_ms=3.0, max_tokens=32, num_output=0, arrival_s=1.0)
    at_ar = p.admit(newcomer, 1.0, running)
    for r in running:  # the same requests, now running quadratic B=4 (20 tokens each)
        r.option = Q4
    busy = p.admit(newcomer, 1.0, running)
    assert busy is not None and busy.status == 429 and "tpot_ms=3" in busy.reason
    assert at_ar is None  # counted at AR's work (one token each) it looked admissible


def test_the_quadratic_stay_is_learnt_from_entries_and_forwards() -> None:
    stay = EntryStay(prior=8.0, prior_entries=2.0)
    assert stay.forwards == 8.0  # nothing measured: the prior
    for _ in range(20):  # twenty entries that each lasted two forwards
        stay.observe_entry()
        stay.observe_forward()
        stay.observe_forward()
    assert stay.forwards == pytest.approx((40 + 16) / 22)
    with pytest.raises(ValueError):
        EntryStay(prior=0.5)
    p = SLOPolicy(synthetic_profile())
    assert p.selector.quad_horizon == QUAD_HORIZON
    for i in range(40):  # entries of one forward each: the selector prices entries dearer
        p.learn(StepRecord(24, 1, 0.01, (WorkRecord(f"r{i}", ChunkKind.DRAFT, Q4, 4, 0),)))
        p.learn(StepRecord(20, 1, 0.01, (WorkRecord(f"r{i}", ChunkKind.QUADRATIC, Q4, 20, 2),)))
    assert p.selector.quad_horizon == pytest.approx((40 + 8 * 8) / (40 + 8))


def test_a_request_alone_prices_the_quadratic_entry_over_its_whole_stay() -> None:
    # Quadratic B=4 at 3 tokens a forward, 48 tokens left: 16 forwards to the end. The entry
    # pass (nothing emitted) is spread over those 16 forwards alone, but over the learnt stay
    # (the prior: QUAD_HORIZON = 8 forwards) beside another request.
    traces = {Q4: [[(1, 3)] * 20] * 4, L8: [[(2, 5)] * 20] * 4}
    p = SLOPolicy(Profile(GPU, traces))
    alone = _tight("a", 1.0, 3.0)
    alone.max_tokens, alone.num_output = 49, 1
    p.selector.select([alone], 1.0)
    assert p.selector.rate_of(alone, Q4) == pytest.approx(3.0 * 16 / 17)
    other = _tight("b", 1.0, 3.0)
    p.selector.select([alone, other], 1.0)
    stay = QUAD_HORIZON
    assert p.selector.rate_of(alone, Q4) == pytest.approx(3.0 * stay / (stay + 1))


def test_upgrades_stay_in_the_mode_everyone_starts_at() -> None:
    # Four tight requests, two of them tighter than linear B=8 alone: the uniform start is
    # linear B=8 for all; upgrading the two into quadratic speculation (an entry pass each,
    # a switch back later) is what churned at high load; with same_mode they stay linear.
    traces = {Q4: [[(1, 3)] * 20] * 4, Q6: [[(1, 5)] * 20] * 4, L8: [[(2, 6)] * 20] * 4}
    views = [_tight(f"t{i}", 1.0, 1.25 if i < 2 else 2.5) for i in range(4)]
    chosen = {}
    for same in (True, False):
        p = SLOPolicy(Profile(GPU, traces),
                      PolicyConfig(selector=SelectorConfig(same_mode=same)))
        chosen[same] = {o.mode for o in p.select(views, 1.0).values() if o is not None}
    assert chosen[True] == {"spec_linear"}
    assert chosen[False] == {"spec_linear", "spec_quadratic"}


def test_admission_paces_a_tight_newcomer_with_its_fellows_at_its_option() -> None:
    # Twenty tight requests run linear B=8. Paced at quadratic B=4 beside their 8 tokens
    # each, a newcomer with a 2.5 ms bound looked admissible; they run one option together
    # (the uniform start), and at any one option for all the pace is ~3 ms: refused.
    traces = {Q4: [[(1, 3)] * 20] * 4, L8: [[(2, 5)] * 20] * 4}
    p = SLOPolicy(Profile(GPU, traces))

    def admit(num_running: int):  # noqa: ANN202
        running = [_tight(f"t{i}", 1.0, 3.0) for i in range(num_running)]
        for r in running:
            r.option = L8
        new = view("new", 1.0, tpot_ms=2.5, max_tokens=32, num_output=0, arrival_s=1.0)
        return p.admit(new, 1.0, running)

    busy = admit(20)
    assert busy is not None and busy.status == 429 and "tpot_ms=2.5" in busy.reason
    assert admit(5) is None


def test_pass_2a_may_cost_deadline_only_payers_what_their_pace_affords() -> None:
    # One tight request runs linear B=8 (its option fixed), three more are free, 25 others
    # run AR. Speculation at 1.5-2 tokens a forward lowers the batch's tokens per second:
    # where the 25 pay with a TPOT bound, tight_loss (3 %) leaves a tight request at AR;
    # where they only have a far deadline they afford it, and all three speculate.
    traces = {L8: [[(2, 3)] * 20] * 4, Q4: [[(1, 2)] * 20] * 4}
    p = SLOPolicy(Profile(GPU, traces))

    def tight_options(payer_slo: dict[str, float], by_payer: bool) -> list[Option]:
        fixed = _tight("fixed", 1.0, 3.0)
        fixed.fixed = fixed.option = L8
        views = [fixed] + [_tight(f"t{i}", 1.0, 3.0) for i in range(3)]
        for i in range(25):
            b = view(f"b{i}", 1.0, max_tokens=41, **payer_slo)
            b.fixed = b.option = AR1
            views.append(b)
        config = SelectorConfig(budget_by_payer=by_payer, uniform_speed_up=False)
        chosen = ModeSelector(p.cost, p.acceptance, config).select(views, 1.0)
        return [chosen[f"t{i}"] for i in range(3)]

    batch, interactive = {"deadline_ms": 2000.0}, {"tpot_ms": 6.5}
    assert AR1 in tight_options(batch, by_payer=False)  # one share for all: 3 %
    assert AR1 not in tight_options(batch, by_payer=True)
    assert AR1 in tight_options(interactive, by_payer=True)  # TPOT payers keep 3 %
    assert tight_options(interactive, True) == tight_options(interactive, False)


def test_a_deadline_payer_affords_what_keeps_it_within_its_margin() -> None:
    batch = Payer(SLO(deadline_ms=1000.0), need=0.02, rate=1.0, slack=0.05)
    behind = Payer(SLO(deadline_ms=1000.0), need=0.006, rate=1.0, slack=0.01)
    tight = Payer(SLO(tpot_ms=3.0), need=0.0025, rate=2.0, slack=-0.01)
    assert batch.affords(0.007, 0.7, 0.03) == pytest.approx(0.5)  # 7 ms of 0.7 x 20 ms
    assert behind.affords(0.007, 0.7, 0.03) == 0.03  # past its margin: tight_loss
    assert tight.affords(0.007, 0.7, 0.03) == 0.03
    assert loss_budget([batch, tight], 0.007, 0.7, 0.03, 0.1) == pytest.approx(0.265)
    assert loss_budget([batch], 0.007, 0.7, 0.03, 0.01) == 1.0  # all with slack: no floor
    with pytest.raises(ValueError):
        Payer(SLO(), need=0.01, rate=0.0, slack=0.0)


def test_a_late_request_whose_bound_ar_meets_is_the_rescue_pass_s() -> None:
    # A request with a 6 ms TPOT bound (AR alone: ~4 ms) fell behind: 3.9 ms a token left
    # for its last 20, which only speculation makes. Pass 2a's loss budget (3 %) bought it
    # linear B=8 at a small cost to the 25 others' tokens per second; the rescue pass, its
    # own since late_in_search is off, buys no speculation with their throughput.
    traces = {L8: [[(2, 3)] * 20] * 4, Q4: [[(1, 2)] * 20] * 4}
    p = SLOPolicy(Profile(GPU, traces))

    def late_option(late_in_search: bool) -> Option:
        late = view("late", 1.0, tpot_ms=6.0, max_tokens=41, num_output=21,
                    arrival_s=1.0 - 0.162 - 0.02)
        assert late.needed_time_per_token(1.0) == pytest.approx(0.0039)
        views = [late]
        for i in range(25):
            b = view(f"b{i}", 1.0, tpot_ms=6.5, max_tokens=41)
            b.fixed = b.option = AR1
            views.append(b)
        config = SelectorConfig(late_in_search=late_in_search, uniform_speed_up=False)
        return ModeSelector(p.cost, p.acceptance, config).select(views, 1.0)["late"]

    assert late_option(late_in_search=True) == L8
    assert late_option(late_in_search=False) == AR1



def test_pass_3_gives_up_a_searched_bet_only_for_searched_gain() -> None:
    # Fifty batch requests (a far deadline) run AR beside one tight request whose bound
    # (2.1 ms) quadratic B=6 meets with about even odds: pass 2a's search puts it there.
    # Back at AR it would lift the batch's tokens per second by ~12 %: pass 3 gave the bet
    # up at min_gain (10 %); it keeps it at searched_gain (20 %).
    traces = {L8: [[(2, 3)] * 20] * 4, Q4: [[(1, 2)] * 20] * 4, Q6: [[(1, 3)] * 20] * 4}
    p = SLOPolicy(Profile(GPU, traces))

    def tight_option(config: SelectorConfig) -> Option:
        views = [_tight("t", 1.0, 2.1)]
        for i in range(50):
            b = view(f"b{i}", 1.0, max_tokens=41, deadline_ms=2000.0)
            b.fixed = b.option = AR1
            views.append(b)
        return ModeSelector(p.cost, p.acceptance, config).select(views, 1.0)["t"]

    assert tight_option(SelectorConfig()) == Q6
    assert tight_option(SelectorConfig(searched_gain=0.1)) == AR1


def test_a_newcomer_starts_where_its_fellows_mid_iteration_will_be_searched_to() -> None:
    # Six tight requests run linear B=8, mid-iteration (their verify pass: they keep it this
    # step), and a tight newcomer is free. Searched alone it was started on quadratic
    # speculation; the next select, with all seven free, puts everyone on linear B=8, so its
    # entry pass emitted nothing (NLD-8B tight medium_high). Valued with its fellows, it
    # starts where that search puts it.
    traces = {Q4: [[(1, 3)] * 20] * 4, Q6: [[(1, 4)] * 20] * 4, L8: [[(2, 5)] * 20] * 4}

    def newcomer(with_fellows: bool, mid_iteration: bool = True) -> Option | None:
        p = SLOPolicy(Profile(GPU, traces), PolicyConfig(
            selector=SelectorConfig(uniform_with_fellows=with_fellows)))
        views = []
        for i in range(6):
            v = _tight(f"t{i}", 1.0, 3.0)
            v.option, v.is_mid_iteration = L8, mid_iteration
            views.append(v)
        return p.select([*views, _tight("new", 1.0, 3.0)], 1.0)["new"]

    assert newcomer(True, mid_iteration=False) == L8  # all free: the joint search's choice
    assert newcomer(True) == L8
    assert newcomer(False) is not None and newcomer(False).mode == "spec_quadratic"


def test_the_uniform_start_keeps_the_option_they_run_unless_another_is_clearly_better() -> None:
    # Five tight requests at an iteration boundary, where quadratic B=4 and linear B=8 for
    # all expect about as many met (linear a little more). Running quadratic, they stay
    # there (uniform_gain); running linear, they stay there. Without the margin (and before
    # it, when the rule read a free request's option at AR, where every select starts it)
    # they moved to linear: such flips lost quadratic entry passes.
    traces = {Q4: [[(1, 3)] * 20] * 4, L8: [[(2, 6)] * 20] * 4}

    def chosen(running: Option, gain: float) -> set[Option | None]:
        p = SLOPolicy(Profile(GPU, traces),
                      PolicyConfig(selector=SelectorConfig(uniform_gain=gain)))
        views = []
        for i in range(5):
            v = _tight(f"t{i}", 1.0, 2.5)
            v.option = running
            views.append(v)
        return set(p.select(views, 1.0).values())

    assert chosen(Q4, 0.01) == {Q4}
    assert chosen(L8, 0.01) == {L8}
    assert chosen(Q4, 0.0) == {L8}
