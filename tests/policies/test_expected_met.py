from __future__ import annotations

import pytest

from policies.expected_met import Pace, Request, expected_met, most_expected, spread_of


def step_of(tokens: int) -> float:  # a GPU-shaped step: 4 ms + 0.02 ms per token
    return 0.004 + 0.00002 * tokens


AR = Pace("ar", 1, 1.0, 0.05)
SMALL = Pace("small", 6, 1.8, 0.2)
BIG = Pace("big", 42, 3.0, 0.2)


def request(key: str, need: float, *paces: Pace) -> Request:
    return Request(key, need, (AR, *paces) if paces else (AR, SMALL, BIG))


def test_even_odds_at_the_need_and_near_certainty_with_margin() -> None:
    assert BIG.p_met(0.006, 0.002) == pytest.approx(0.5)  # 6 ms / 3 tokens = 2 ms
    assert BIG.p_met(0.0036, 0.002) > 0.97  # 1.2 ms per token: 2 spreads of margin
    assert BIG.p_met(0.009, 0.002) < 0.01  # 3 ms per token: far behind
    assert AR.p_met(1.0, float("inf")) == 1.0  # no bound


def test_the_spread_shrinks_as_fewer_iterations_remain_to_average_over() -> None:
    many, few = spread_of(0.5, 4.0, 64, 0.05), spread_of(0.5, 4.0, 4, 0.05)
    assert few == pytest.approx((0.5**2 + 0.05**2) ** 0.5)  # one iteration left
    assert many < few and many >= 0.05


def test_margin_is_bought_where_meeting_at_the_edge_would_be_a_coin_flip() -> None:
    # Alone, "small" puts "a" exactly at its need (4.14 ms / 1.8 = 2.3 ms: even odds);
    # "big" costs 36 tokens more but gives 1.6 ms per token: 0.93. Meet-most would
    # take "small" (met this step at the least work); the expected count takes "big".
    chosen, value = most_expected([request("a", 0.0023)], 1, step_of, 512)
    assert chosen == {"a": "big"} and value > 0.9


def test_a_request_nothing_saves_stays_at_its_cheapest_pace() -> None:
    chosen, value = most_expected([request("lost", 0.0005)], 1, step_of, 512)
    assert chosen == {"lost": "ar"} and value < 0.01


def test_the_device_goes_where_it_buys_the_most_expected_requests() -> None:
    # Four requests that each need the big option (<= 1.7 ms per token at 3 per forward:
    # a step of <= 5.1 ms): one makes 4.9 ms (better than even odds), two would put both at
    # 5.7 ms (nearly lost).
    requests = [request(k, 0.0017) for k in "abcd"]
    chosen, value = most_expected(requests, 4, step_of, 512)
    assert sorted(chosen.values()).count("big") == 1
    assert 0.5 < value < 1.0


def test_the_token_budget_and_the_throughput_floor_hold() -> None:
    r = [request("a", 0.0017)]
    assert most_expected(r, 1, step_of, 20)[0] == {"a": "ar"}
    # 1 token per forward at 4.02 ms: 249 tok/s; the big option gives 3 / 4.84 ms = 620.
    assert most_expected(r, 1, step_of, 512, base_rate=1.0, floor=700.0)[0] == {"a": "ar"}
    assert most_expected(r, 1, step_of, 512, base_rate=1.0, floor=600.0)[0] == {"a": "big"}


def test_paces_check_themselves() -> None:
    with pytest.raises(ValueError):
        Pace("x", 0, 1.0, 0.1)
    with pytest.raises(ValueError):
        Pace("x", 1, 1.0, 0.0)
    with pytest.raises(ValueError):
        Request("r", 0.001, ())


def test_the_hulls_inlined_p_met_is_pace_p_met_to_the_bit():
    """_hull computes P(met) inline for speed: it must stay Pace.p_met's arithmetic."""
    import random

    from policies.expected_met import _hull

    rng = random.Random(7)
    for _ in range(200):
        paces = tuple(Pace(i, rng.randint(1, 48), rng.uniform(0.5, 6.0), rng.uniform(0.01, 0.5))
                      for i in range(rng.randint(1, 8)))
        need = rng.choice([float("inf"), rng.uniform(1e-4, 0.02)])
        r, step = Request("r", need, paces), rng.uniform(1e-3, 0.05)
        _, met = _hull(r, step)
        assert met == [p.p_met(step, need) for p in paces]


def test_the_inlined_sum_of_expected_met_is_p_mets_to_the_bit():
    """expected_met sums P(met) inline for speed: the same floats, in the same order."""
    import random

    rng = random.Random(11)
    for _ in range(200):
        requests = [Request(i, rng.choice([float("inf"), rng.uniform(1e-4, 0.02)]), (Pace(
            "ar", 1, rng.uniform(0.5, 6.0), rng.uniform(0.01, 0.5)),)) for i in range(
            rng.randint(1, 12))]
        choice, step = {r.key: r.paces[0] for r in requests}, rng.uniform(1e-3, 0.05)
        assert expected_met(requests, choice, step) == sum(
            choice[r.key].p_met(step, r.need) for r in requests)


def test_the_hull_walks_work_groups_as_a_sort_by_work_then_p_would():
    """_hull takes each work's most likely pace (the first of equal ones) from
    Request.by_work, sorted once: the hull of a sort by (work, -P) at every step."""
    import random

    from policies.expected_met import _hull

    def sorted_hull(paces: tuple[Pace, ...], met: list[float]) -> list[int]:
        hull = [0]
        for i in sorted(range(len(paces)), key=lambda i: (paces[i].work, -met[i])):
            w, m, last = paces[i].work, met[i], hull[-1]
            if w <= paces[last].work or m <= met[last]:
                continue
            while len(hull) >= 2 and (
                    (met[hull[-1]] - met[hull[-2]]) / max(1, paces[hull[-1]].work
                                                          - paces[hull[-2]].work)
                    <= (m - met[hull[-1]]) / max(1, w - paces[hull[-1]].work)):
                hull.pop()
            hull.append(i)
        return hull

    rng = random.Random(3)
    for _ in range(300):  # few distinct works and rates: equal works and equal P are common
        paces = tuple(Pace(i, rng.choice([1, 4, 8, 8, 12]), rng.choice([1.0, 2.0, 2.0, 3.5]),
                           rng.choice([0.05, 0.2])) for i in range(rng.randint(1, 9)))
        need = rng.choice([float("inf"), rng.uniform(1e-3, 0.02)])
        r, step = Request("r", need, paces), rng.uniform(1e-3, 0.05)
        hull, met = _hull(r, step)
        assert hull == sorted_hull(paces, met)
