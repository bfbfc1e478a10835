"""Deferral and priority: lower-priority requests (a batch job's) sit steps out when a
higher-priority request runs late by the engine's own clock, although the predicted step
says it is on pace (the gap between steps is not in the cost model)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policies.deferral import measured_time_per_token
from policies.policy import SLOPolicy
from policies.request_view import RequestView
from tests.policies.helpers import synthetic_profile, view

NOW = 100.0


def online(seconds_per_token: float, priority: int = 0) -> RequestView:
    """An online request 10 tokens in (32 due at 100 ms each after its first)."""
    v = view("online", NOW, tpot_ms=100.0, max_tokens=32, num_output=10, priority=priority)
    return replace(v, first_token_s=NOW - 9 * seconds_per_token,
                   arrival_s=NOW - 9 * seconds_per_token - 0.1)


def batch(n: int, priority: int = -1) -> list[RequestView]:
    return [view(f"b{i}", NOW, deadline_ms=600_000.0, max_tokens=32, num_output=5,
                 priority=priority) for i in range(n)]


def test_measured_pace() -> None:
    v = online(0.12)
    assert measured_time_per_token(v, NOW, 4) == pytest.approx(0.12)
    assert measured_time_per_token(replace(v, num_output=3), NOW, 4) is None  # too few
    assert measured_time_per_token(view("w", NOW, num_output=0), NOW, 4) is None


def test_batch_yields_to_an_online_request_that_runs_late() -> None:
    policy = SLOPolicy(synthetic_profile())
    # The predicted step at 17 requests (~17 ms) is well within 100 ms a token, but the
    # engine measured 120 ms a token: the batch requests sit this step out.
    _, deferred = policy.choose([online(0.12), *batch(16)], NOW)
    assert deferred and "online" not in deferred
    assert deferred <= {f"b{i}" for i in range(16)}
    assert len(deferred) == 16  # every one that can wait
    # On pace by its own clock too: nobody waits.
    assert policy.choose([online(0.03), *batch(16)], NOW)[1] == set()
    # The same priority: a measured lateness moves nobody (the predicted rule only).
    assert policy.choose([online(0.12, priority=-1), *batch(16)], NOW)[1] == set()
    # A batch request without the slack to wait keeps running.
    tight = [replace(b, slo=replace(b.slo, deadline_ms=200.0)) for b in batch(4)]
    _, deferred = policy.choose([online(0.12), *tight], NOW)
    assert deferred == set()


def test_by_slack_is_spare_over_the_batch() -> None:
    """_by_slack inlines spare() for speed: on random requests (with and without bounds,
    prefilling, priorities) it keeps the same requests, most slack first."""
    import random

    deferral = SLOPolicy(synthetic_profile()).deferral
    rng, kept = random.Random(0), 0
    for _ in range(200):
        vs = []
        for i in range(8):
            kind = rng.choice(["tpot", "deadline", "ttft", "none"])
            bound = {"tpot": {"tpot_ms": rng.uniform(5, 200)},
                     "deadline": {"deadline_ms": rng.uniform(50, 5000)},
                     "ttft": {"ttft_ms": rng.uniform(5, 500)}, "none": {}}[kind]
            vs.append(view(f"r{i}", NOW, max_tokens=64, num_output=rng.choice([0, 1, 10, 40]),
                           priority=rng.choice([-1, 0, 1]),
                           arrival_s=NOW - rng.uniform(0, 2), **bound))
        rate = {v.id: rng.choice([1.0, 1.5, 2.2]) for v in vs}
        step, priority = rng.uniform(0.001, 0.05), rng.choice([-1, 0, 1])
        want = sorted(((s, v.id) for v in vs if v.priority <= priority
                       and (s := deferral.spare(v, NOW, step, rate[v.id])) is not None),
                      key=lambda x: -x[0])
        got = deferral._by_slack(vs, rate, step, NOW, priority)
        assert [v.id for v in got] == [rid for _, rid in want]
        kept += len(want)
    assert kept > 200  # the cases keep requests, not only refuse them
