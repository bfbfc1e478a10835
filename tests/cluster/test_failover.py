"""cluster/failover.py with stand-in response generators: a replica lost before it answered
is asked again; lost every time, the client gets a 503 saying so."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError

from cluster import failover
from cluster.job_builder import BadRequest


class Gen:
    def __init__(self, first: object) -> None:
        self.first, self.cancelled = first, False

    async def __anext__(self) -> object:
        if isinstance(self.first, BaseException):
            raise self.first
        return self.first

    def cancel(self) -> None:
        self.cancelled = True


def test_a_lost_replica_before_any_answer_is_asked_again(monkeypatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", lambda s: _now())
    sent = [Gen(ActorDiedError()), Gen("accepted")]
    gen, first = asyncio.run(failover.first_item(lambda: sent.pop(0)))
    assert first == "accepted" and not sent


def test_lost_every_time_is_a_503_not_a_hang(monkeypatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", lambda s: _now())
    gens = [Gen(ActorDiedError()) for _ in range(failover.MAX_RESENDS + 1)]
    it = iter(gens)
    with pytest.raises(BadRequest) as err:
        asyncio.run(failover.first_item(lambda: next(it)))
    assert err.value.status == 503 and "replica" in err.value.message
    assert all(g.cancelled for g in gens)


def test_other_errors_are_not_resent() -> None:
    g = Gen(ValueError("bad"))
    with pytest.raises(ValueError):
        asyncio.run(failover.first_item(lambda: g))
    assert g.cancelled


async def _now() -> None:
    return None
