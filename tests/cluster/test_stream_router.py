"""The replica-wide release tick (cluster/stream_router.py): a stream's first tokens, its end
and errors go out at once; the steps in between wait for the next tick, and every stream
held then is released in the same turn. Plain deltas, no engine."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from cluster.job import ChoiceSpec, GenerateJob, JobError
from cluster.metrics import ServerMetrics
from cluster.step_delta import StepDelta
from cluster.stream_router import StreamPacing, StreamRouter
from engine.params import DecodeParams, SamplingParams


def _job(name: str) -> GenerateJob:
    return GenerateJob(name, (ChoiceSpec(0, "x", SamplingParams(max_tokens=8)),),
                       DecodeParams())


def _delta(rid: str, token: int, finished: bool = False) -> StepDelta:
    return StepDelta(rid, [token], f"t{token}", finished, "length" if finished else None,
                     0.0, None, None, None)


def _woken(streams: list) -> list[bool]:
    return [s.num_released > 0 for s in streams]


def test_streams_are_released_together_on_the_tick() -> None:
    async def run() -> None:
        router = StreamRouter(ServerMetrics("tiny"), StreamPacing(0.05))
        a = router.open(_job("a"), [("ra", 1)], 0.0)
        b = router.open(_job("b"), [("rb", 1)], 0.0)
        router.dispatch([_delta("ra", 1), _delta("rb", 1)], now=1.0)
        assert _woken([a, b]) == [True, True]  # first tokens at once (and a tick)
        assert [e.text for e in await a.get()] == ["t1"]
        assert [e.text for e in await b.get()] == ["t1"]
        router.dispatch([_delta("ra", 2), _delta("rb", 2)], now=1.02)
        router.dispatch([_delta("ra", 3), _delta("rb", 3)], now=1.04)
        assert _woken([a, b]) == [False, False]  # held: 40 ms since the last tick
        router.dispatch([_delta("ra", 4), _delta("rb", 4, finished=True)], now=1.045)
        assert _woken([a, b]) == [False, True]  # b's end at once, a still held
        assert [e.text for e in await b.get()] == ["t2", "t3", "t4"]
        assert b.num_open == 0 and not b.has_pending
        router.dispatch([_delta("ra", 5)], now=1.06)  # the tick: a's four steps, one item
        assert _woken([a]) == [True]
        events = await a.get()
        assert [e.text for e in events] == ["t2", "t3", "t4", "t5"]
        router.dispatch([_delta("ra", 6)], now=1.07)
        assert _woken([a]) == [False]
        router.fail_all(JobError(500, "boom", None, "server_error"))  # errors at once
        assert _woken([a]) == [True]
        assert [e.text for e in await a.get()] == ["t6"]
        assert isinstance(await a.get(), JobError)

    asyncio.run(run())


def test_interval_zero_releases_every_step() -> None:
    async def run() -> None:
        router = StreamRouter(ServerMetrics("tiny"))
        a = router.open(_job("a"), [("ra", 1)], 0.0)
        for i, now in enumerate([1.0, 1.001, 1.002]):
            router.dispatch([_delta("ra", i)], now=now)
            assert [e.text for e in await a.get()] == [f"t{i}"]

    asyncio.run(run())


def test_the_tick_stretches_with_the_number_of_streams() -> None:
    pacing = StreamPacing(0.05, max_chunks_per_s=400)
    assert pacing.tick_s(1) == pacing.tick_s(20) == 0.05
    assert abs(pacing.tick_s(64) - 0.16) < 1e-12
    assert pacing.tick_s(1000) == 0.2  # the ceiling
    assert StreamPacing(0.05).tick_s(1000) == 0.05  # no cap
    with pytest.raises(ValueError, match="interval_s"):
        StreamPacing(-1.0)
    with pytest.raises(ValueError, match="max_chunks_per_s"):
        StreamPacing(0.05, max_chunks_per_s=-1.0)
    with pytest.raises(ValueError, match="max_interval_s"):
        StreamPacing(0.05, max_chunks_per_s=400, max_interval_s=-1.0)
    assert StreamPacing(0.5, 400, max_interval_s=0.2).tick_s(1000) == 0.5  # its own interval

    async def run() -> None:
        router = StreamRouter(ServerMetrics("tiny"), StreamPacing(0.05, max_chunks_per_s=400))
        streams = [router.open(_job(f"s{i}"), [(f"r{i}", 1)], 0.0) for i in range(40)]
        router.dispatch([_delta(f"r{i}", 1) for i in range(40)], now=1.0)  # first tokens
        for s in streams:
            await s.get()
        # 40 streams at 400 chunks/s: a tick every 100 ms, not every 50.
        router.dispatch([_delta(f"r{i}", 2) for i in range(40)], now=1.06)
        assert not any(_woken(streams))
        router.dispatch([_delta(f"r{i}", 3) for i in range(40)], now=1.1)
        assert all(_woken(streams))
        assert [e.text for e in await streams[0].get()] == ["t2", "t3"]

    asyncio.run(run())


def test_streams_on_their_own_clock_do_not_stretch_the_tick() -> None:
    async def run() -> None:
        router = StreamRouter(ServerMetrics("tiny"), StreamPacing(0.05, max_chunks_per_s=400))
        batch = [router.open(replace(_job(f"b{i}"), stream_interval_ms=250.0),
                             [(f"b{i}", 1)], 0.0) for i in range(40)]
        online = router.open(_job("o"), [("o", 1)], 0.0)
        rids = [f"b{i}" for i in range(40)] + ["o"]
        router.dispatch([_delta(r, 1) for r in rids], now=1.0)
        for s in [*batch, online]:
            await s.get()
        router.dispatch([_delta(r, 2) for r in rids], now=1.06)  # one stream on the tick
        assert _woken([online]) == [True]

    asyncio.run(run())
