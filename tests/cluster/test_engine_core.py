"""The engine-core process beside a replica: the same streams as the in-process engine,
aborts and refusals through the pipe, a broken policy or a dead core failing loudly."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from cluster.config import TandemConfig, load_config
from cluster.job import ChoiceEvent, ChoiceSpec, GenerateJob, JobAccepted, JobError
from cluster.model_server import ModelServer
from engine.engine import LLMEngine
from engine.params import DecodeParams, Mode, SamplingParams
from engine.policy import FirstComePolicy

PROMPT = "def parse_args("
# One torch thread: two on a busy 2-core box stall in OpenMP barriers (~0.2 s a step).
CONFIG = {"model": {"num_kv_blocks": 64, "max_model_len": 256, "engine_core": "process",
                    "policy": "first_come", "torch_threads": 1}}


class BrokenPolicy(FirstComePolicy):
    def plan(self, view):  # noqa: ANN001, ANN201
        raise ZeroDivisionError("empty fit")


def broken_engine(config: TandemConfig) -> LLMEngine:
    """An importable factory (the core unpickles it by name)."""
    ec = config.engine_config()
    return LLMEngine.from_checkpoint(config.model.model_dir, ec, "cpu", BrokenPolicy())


def job(*prompts: str, max_tokens: int = 8, mode: Mode = Mode.AR) -> GenerateJob:
    choices = tuple(ChoiceSpec(i, p, SamplingParams(max_tokens=max_tokens, seed=1 + i,
                                                    temperature=0.7))
                    for i, p in enumerate(prompts))
    return GenerateJob("job", choices, DecodeParams(mode=mode), logprobs=0)


async def collect(server: ModelServer, j: GenerateJob) -> list:
    return [item async for item in server.generate(j)]


@pytest.fixture(scope="module")
def server() -> ModelServer:
    """With the admission gate on: a job that finds the engine idle is never held, so only
    the test of the gate sees it hold."""
    s = ModelServer(load_config({"model": {**CONFIG["model"], "admit_hold_steps": 6}}))
    yield s
    s.loop.shutdown()


def test_streams_equal_the_in_process_engine(server: ModelServer, tiny_model, codec) -> None:
    from engine.executor import ModelExecutor

    assert server.engine is None and server.loop.proc.poll() is None
    items = asyncio.run(collect(server, job(PROMPT, "import os", max_tokens=12)))
    assert isinstance(items[0], JobAccepted)
    events = [ChoiceEvent.from_wire(e) for batch in items[1:] for e in batch]
    texts = ["".join(e.text for e in events if e.index == i) for i in (0, 1)]
    ref = LLMEngine(ModelExecutor(tiny_model, 64, 16), tiny_model.config, codec)
    want = [ref.generate([p], SamplingParams(max_tokens=12, seed=1 + i, temperature=0.7),
                         DecodeParams(mode=Mode.AR))[0].text
            for i, p in enumerate([PROMPT, "import os"])]
    assert texts == want
    assert sum(len(e.logprobs) for e in events if e.index == 0) == 12
    stats = server.loop.stats()
    assert stats.kv_free_blocks == stats.kv_blocks and stats.num_running == 0


def test_closing_the_stream_frees_kv_and_refusals_name_the_field(server: ModelServer) -> None:
    async def run() -> None:
        gen = server.generate(job(PROMPT, max_tokens=200))
        assert isinstance(await gen.__anext__(), JobAccepted)
        await gen.__anext__()
        await gen.aclose()
        for _ in range(200):
            st = server.loop.stats()
            if st.num_running == 0 and st.kv_free_blocks == st.kv_blocks:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"KV not freed: {server.loop.stats()}")

    asyncio.run(run())
    refused = asyncio.run(collect(server, job(PROMPT, max_tokens=300)))[0]
    assert isinstance(refused, JobError) and refused.status == 400
    assert refused.param == "max_tokens"


def test_a_broken_policy_in_the_core_is_a_500_and_counted() -> None:
    s = ModelServer(load_config(CONFIG), broken_engine)
    try:
        items = asyncio.run(collect(s, job(PROMPT)))
        assert isinstance(items[-1], JobError) and items[-1].status == 500
        assert "empty fit" in items[-1].message
        assert 'stage="step"} 1.0' in s.prom.text()
    finally:
        s.loop.shutdown()


def test_a_dead_core_fails_open_jobs() -> None:
    s = ModelServer(load_config(CONFIG))

    async def run() -> list:
        gen = s.generate(job(PROMPT, max_tokens=200))
        items = [await gen.__anext__(), await gen.__anext__()]
        os.kill(s.loop.proc.pid, signal.SIGKILL)
        return items + [item async for item in gen]

    try:
        items = asyncio.run(run())
        assert isinstance(items[-1], JobError) and items[-1].status == 500
        assert "engine core exited" in items[-1].message
        refused = asyncio.run(collect(s, job(PROMPT)))[0]
        assert isinstance(refused, JobError) and refused.status == 503
    finally:
        s.loop.shutdown()


def test_jobs_held_at_the_admission_gate_stream_the_same_text(server: ModelServer, codec,
                                                              tiny_model) -> None:
    """Two short jobs end beside a long one, so a newcomer finds the batch under its recent
    level and is held (cluster/admission_gate.py) until the hold runs out; it still streams
    exactly the text of the in-process engine, and the engine ends idle with its KV free."""
    from dataclasses import replace

    from engine.executor import ModelExecutor

    s = server

    async def run() -> list[str]:
        long = asyncio.ensure_future(collect(s, replace(job(PROMPT, max_tokens=40), id="a")))
        short = [replace(job("import os", max_tokens=2), id=f"s{i}") for i in range(2)]
        await asyncio.gather(*(collect(s, j) for j in short))
        late = await collect(s, replace(job("import os", max_tokens=12), id="b"))
        await long
        return ["".join(ChoiceEvent.from_wire(e).text for batch in late[1:] for e in batch)]

    assert s.loop.stats().num_running == 0
    texts = asyncio.run(run())
    ref = LLMEngine(ModelExecutor(tiny_model, 64, 16), tiny_model.config, codec)
    want = ref.generate(["import os"], SamplingParams(max_tokens=12, seed=1, temperature=0.7),
                        DecodeParams(mode=Mode.AR))[0].text
    assert texts == [want]
    stats = s.loop.stats()
    assert stats.num_running == 0 and stats.kv_free_blocks == stats.kv_blocks
