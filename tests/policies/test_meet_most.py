from __future__ import annotations

from policies.meet_most import Menu, meet_most


def step_of(tokens: int) -> float:  # a GPU-shaped step: 4 ms + 0.02 ms per token
    return 0.004 + 0.00002 * tokens


def menu(key: str, need: float, options: dict[str, tuple[int, float]]) -> Menu:
    """options: name -> (work tokens, tokens per forward); met while step <= need x tpf."""
    return Menu.pruned(key, (1, 1.0), [(w, need * r, name, r)
                                      for name, (w, r) in options.items()])


SPEC = {"ar": (1, 1.0), "small": (6, 1.8), "big": (42, 3.0)}


def test_each_request_gets_its_cheapest_option_that_meets_the_shared_step() -> None:
    # "a" has room: the small option meets it; "b" needs the big one.
    menus = [menu("a", 0.003, SPEC), menu("b", 0.0018, SPEC)]
    chosen = meet_most(menus, base_tokens=2, step_of=step_of, max_tokens=512)
    assert chosen == {"a": "small", "b": "big"}
    tokens = 6 + 42
    assert step_of(tokens) <= 0.003 * 1.8 and step_of(tokens) <= 0.0018 * 3.0
    # With less room for "a", only one of them can be met.
    menus = [menu("a", 0.0025, SPEC), menu("b", 0.0015, SPEC)]
    assert len(meet_most(menus, base_tokens=2, step_of=step_of, max_tokens=512)) == 1


def test_the_most_requests_met_when_not_all_can_be() -> None:
    # Four requests that each need the big option, met while the step is <= 1.7 ms x 3.0
    # = 5.1 ms: one at big makes 4.9 ms, two 5.7 ms: only one can be met.
    menus = [menu(k, 0.0017, SPEC) for k in "abcd"]
    chosen = meet_most(menus, base_tokens=4, step_of=step_of, max_tokens=512)
    assert len(chosen) == 1
    # With room for 5.85 ms, two (5.7 ms; three would make 6.5).
    menus = [menu(k, 0.00195, SPEC) for k in "abcd"]
    assert len(meet_most(menus, base_tokens=4, step_of=step_of, max_tokens=512)) == 2


def test_a_request_that_ar_meets_is_never_broken() -> None:
    # "slow" is met at AR only while the step stays <= 4.2 ms: no room for "hot"'s big option.
    menus = [menu("slow", 0.0042, {"ar": (1, 1.0)}), menu("hot", 0.0015, SPEC)]
    assert meet_most(menus, base_tokens=2, step_of=step_of, max_tokens=512) == {"slow": "ar"}


def test_the_token_budget_and_the_throughput_floor_hold() -> None:
    menus = [menu("a", 0.0017, SPEC)]  # met by the big option only (4.84 ms <= 5.1)
    assert meet_most(menus, base_tokens=1, step_of=step_of, max_tokens=20) == {}
    # 1 token per forward at 4.02 ms: 249 tok/s; the big option gives 3 / 4.84 ms = 620.
    assert meet_most(menus, 1, step_of, 512, base_rate=1.0, floor=700.0) == {}
    assert meet_most(menus, 1, step_of, 512, base_rate=1.0, floor=600.0) == {"a": "big"}


def test_dominated_options_are_pruned() -> None:
    m = menu("a", 0.002, {"ar": (1, 1.0), "worse": (10, 0.9), "good": (6, 2.0)})
    assert [c[2] for c in m.choices] == ["ar", "good"]
