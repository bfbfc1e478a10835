import pytest

from policies.option import AR, AR1, Option
from policies.policy import PolicyConfig, SLOPolicy
from policies.selector import SelectorConfig
from tests.policies.helpers import step_s, synthetic_profile, view


def policy() -> SLOPolicy:
    return SLOPolicy(synthetic_profile())


def test_light_load_picks_speculation():
    # One request alone: a step of 20 tokens costs 12.3 ms for 2.2 tokens (5.6 ms/token),
    # AR 8.5 ms/token: speculation is faster and the device is idle.
    choice = policy().select([view("a", tpot_ms=50.0)], now=0.0)
    assert choice["a"].mode != AR
    # ...also for a request without any SLO (spare compute buys speed).
    assert policy().select([view("b")], now=0.0)["b"].mode != AR


def test_heavy_load_slack_requests_fall_back_to_ar():
    # 48 requests with loose deadlines: extra tokens lengthen everyone's step; AR is best.
    views = [view(f"r{i}", deadline_ms=60_000.0) for i in range(48)]
    choice = policy().select(views, now=0.0)
    assert {o.mode for o in choice.values()} == {AR}


def test_heavy_load_spends_spare_compute_on_the_request_at_risk():
    # 20 slack requests in AR make a step of 18.5 ms; one interactive request needs
    # 12.1 ms per token (15 ms TPOT, 0.85 safety): AR misses it; linear B=8 (8 tokens a
    # forward, 1.8 per forward: 20.1 ms / 1.8 = 11.2 ms) is the cheapest option that meets
    # it (linear B=4 and quadratic B=2 are cheaper, too slow; quadratic B=3 meets it too,
    # 11.6 ms, with 12 tokens).
    views = [view(f"r{i}", deadline_ms=60_000.0) for i in range(20)]
    views.append(view("hot", tpot_ms=15.0, max_tokens=40))
    choice = policy().select(views, now=0.0)
    assert choice["hot"] == Option("spec_linear", 8)
    assert all(choice[f"r{i}"].mode == AR for i in range(20))


def test_rescue_never_breaks_a_request_that_meets_its_slo():
    # The others need steps of <= 19.7 ms (24 ms TPOT, 0.85 safety) and get 18.5 ms in AR:
    # every option that would save "hot" lengthens the step past that. Allowed to cost the
    # batch 3 % of its tokens per second, it gets the fastest option that keeps them whole
    # (linear B=4: a 19.1 ms step, 12.7 ms per token).
    views = [view(f"r{i}", tpot_ms=24.0, max_tokens=40) for i in range(20)]
    views.append(view("hot", tpot_ms=15.0, max_tokens=40))
    lenient = SLOPolicy(synthetic_profile(),
                        PolicyConfig(selector=SelectorConfig(rescue_loss=0.03)))
    choice = lenient.select(views, now=0.0)
    tokens = sum(o.work_tokens for o in choice.values())
    assert step_s(tokens, len(views)) <= 0.0197
    assert choice["hot"] == Option("spec_linear", 4)


def test_by_default_a_rescue_without_slack_costs_the_batch_nothing():
    # The same batch under the default rescue_loss = 0: nobody has slack to give, so "hot"
    # is not sped up at the others' expense (near capacity such rescues spiralled: the
    # rescued requests' longer steps pushed others off pace, who were rescued in turn).
    views = [view(f"r{i}", tpot_ms=24.0, max_tokens=40) for i in range(20)]
    views.append(view("hot", tpot_ms=15.0, max_tokens=40))
    choice = policy().select(views, now=0.0)
    assert {o.mode for o in choice.values()} == {AR}


def test_a_rescue_moves_nobody_else_to_make_room():
    # "o" meets its pace at AR with its margin (9.0 ms steps; its 12 ms TPOT leaves 9.5 ms a
    # token with the margin); "hot" misses its (9 ms TPOT: 7.0 ms with the margin).
    # Quadratic B=4 would save hot (a 12.8 ms step) but break o. Re-rescuing o at linear
    # B=4 (a 13.4 ms step, 8.9 ms a token) plans both on pace, but trades o's sure pace at
    # AR for a bet on its acceptance; on a slowed CPU profile such trades lost more requests
    # than they saved (BENCHMARKS.md, "#12's CPU-engine target, eighth session").
    views = [view("o", tpot_ms=12.0, max_tokens=40), view("hot", tpot_ms=9.0, max_tokens=40)]
    choice = policy().select(views, now=0.0)
    assert choice["o"] == AR1


@pytest.mark.parametrize("rescue_loss", [0.0, 0.03])
def test_without_slack_rescues_cost_the_batch_little_throughput(rescue_loss: float) -> None:
    # Five requests at risk among 20 on-track ones that have no slack to give: saving them
    # all with speculation would slow the batch (and the requests arriving after them);
    # the selector keeps the batch's tokens per second within rescue_loss of all-AR.
    p = SLOPolicy(synthetic_profile(),
                  PolicyConfig(selector=SelectorConfig(rescue_loss=rescue_loss)))
    views = [view(f"r{i}", tpot_ms=24.0, max_tokens=40) for i in range(20)]
    views += [view(f"hot{i}", tpot_ms=15.0, max_tokens=40) for i in range(5)]
    choice = p.select(views, now=0.0)

    def tokens_per_s(options: list[Option]) -> float:
        rate = sum(p.acceptance.tokens_per_forward(o) for o in options)
        return rate / step_s(sum(o.work_tokens for o in options), len(options))

    all_ar = tokens_per_s([Option(AR)] * len(views))
    assert tokens_per_s(list(choice.values())) >= all_ar * (1 - p.selector.config.rescue_loss)
    if rescue_loss:  # but it does rescue what that share buys
        assert any(o.mode != AR for o in choice.values())


def test_fixed_and_mid_iteration_requests_keep_their_option():
    pinned = view("p")
    pinned.fixed = Option("spec_linear", 8)
    mid = view("m")
    mid.option, mid.is_mid_iteration = Option("spec_linear", 16), True
    choice = policy().select([pinned, mid], now=0.0)
    assert choice == {"p": Option("spec_linear", 8), "m": Option("spec_linear", 16)}


def test_lossy_options_only_when_allowed():
    v = view("a")
    options = {o.mode for o in SLOPolicy(synthetic_profile()).options(v)}
    assert "diffusion" not in options
    v.allow_lossy = True
    assert "diffusion" in {o.mode for o in SLOPolicy(synthetic_profile()).options(v)}


def test_fixed_policy_pins_every_auto_request():
    p = SLOPolicy(synthetic_profile(), PolicyConfig(fixed=Option("spec_quadratic", 4)))
    choice = p.select([view("a"), view("b", deadline_ms=60_000.0)], now=0.0)
    assert set(choice.values()) == {Option("spec_quadratic", 4)}


def test_a_request_with_nothing_left_is_chosen_for_without_dividing_by_zero() -> None:
    """A decoder at its max_tokens (nothing left to emit) among others: its tokens per
    forward were capped to 0 under speculation and divided by (ZeroDivisionError); it gets
    AR, the others are chosen for as usual."""
    policy = SLOPolicy(synthetic_profile())
    vs = [view(f"r{i}", 1.0, tpot_ms=20.0, max_tokens=32, num_output=5) for i in range(4)]
    options, _ = policy.choose([*vs, view("done", 1.0, tpot_ms=5.0, max_tokens=32,
                                           num_output=32)], 1.0)
    assert options["done"] == AR1
    assert set(options) == {"done", "r0", "r1", "r2", "r3"}
