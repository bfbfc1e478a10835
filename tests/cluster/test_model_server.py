"""The model server without Ray: the async engine loop, aborts freeing KV, refusals."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from cluster.config import TandemConfig, load_config
from cluster.job import ChoiceEvent, ChoiceSpec, GenerateJob, JobAccepted, JobError
from cluster.model_server import ModelServer, make_policy
from engine.engine import LLMEngine
from engine.executor import ModelExecutor
from engine.params import DecodeParams, Mode, SamplingParams

PROMPT = "def parse_args("


@pytest.fixture
def server(tiny_model, codec) -> ModelServer:
    def factory(config: TandemConfig) -> LLMEngine:
        ec = config.engine_config()
        return LLMEngine(ModelExecutor(tiny_model, ec.num_blocks, ec.block_size),
                         tiny_model.config, codec, ec, make_policy(config))

    return ModelServer(load_config({"model": {"num_kv_blocks": 64, "max_model_len": 256}}),
                       factory)


def job(*prompts: str, max_tokens: int = 8, seed: int = 1, logprobs: int | None = None,
        mode: Mode = Mode.AUTO) -> GenerateJob:
    choices = tuple(ChoiceSpec(i, p, SamplingParams(max_tokens=max_tokens, seed=seed + i,
                                                    temperature=0.7))
                    for i, p in enumerate(prompts))
    return GenerateJob("job", choices, DecodeParams(mode=mode), logprobs=logprobs)


async def collect(server: ModelServer, j: GenerateJob) -> tuple[object, dict[int, str], list]:
    items = [item async for item in server.generate(j)]
    texts: dict[int, str] = {}
    events = [ChoiceEvent.from_wire(e) for batch in items[1:] if isinstance(batch, list)
              for e in batch]
    for e in events:
        texts[e.index] = texts.get(e.index, "") + e.text
    return items[0], texts, events


def test_generate_streams_the_solo_text_with_stats_and_logprobs(server: ModelServer) -> None:
    first, texts, events = asyncio.run(collect(server, job(PROMPT, "import os", logprobs=1)))
    assert isinstance(first, JobAccepted) and len(first.num_prompt_tokens) == 2
    solo = [server.engine.generate([p], SamplingParams(max_tokens=8, seed=1 + i,
                                                       temperature=0.7))[0].text
            for i, p in enumerate([PROMPT, "import os"])]
    assert [texts[0], texts[1]] == solo
    finals = [e for e in events if e.finish_reason is not None]
    assert {e.index for e in finals} == {0, 1}
    for e in finals:
        assert e.stats.num_completion_tokens == 8 and e.stats.num_forwards > 0
    lps = [lp for e in events if e.index == 0 for lp in e.logprobs or []]
    assert len(lps) == 8 and all(lp.logprob <= 0 for lp in lps)
    assert server.engine.pool.num_free == server.engine.pool.num_blocks


def test_closing_the_stream_aborts_and_frees_kv(server: ModelServer) -> None:
    async def run() -> None:
        gen = server.generate(job(PROMPT, max_tokens=200, mode=Mode.AR))
        assert isinstance(await gen.__anext__(), JobAccepted)
        await gen.__anext__()  # some tokens
        assert server.engine.pool.num_free < server.engine.pool.num_blocks
        await gen.aclose()  # what Serve does when the client goes away
        for _ in range(100):
            if not server.engine.has_unfinished():
                break
            await asyncio.sleep(0.02)

    asyncio.run(run())
    assert not server.engine.has_unfinished()
    assert server.engine.pool.num_free == server.engine.pool.num_blocks
    assert "tandem_requests_aborted_total" in server.prom.text()


@pytest.mark.parametrize("prompt, max_tokens, param", [
    ("x = 1\n" * 200, 8, "prompt"),  # longer than max_model_len = 256
    (PROMPT, 300, "max_tokens"),
])
def test_refusals_name_the_field_and_the_server_keeps_serving(
        server: ModelServer, prompt: str, max_tokens: int, param: str) -> None:
    first, _, _ = asyncio.run(collect(server, job(prompt, max_tokens=max_tokens)))
    assert isinstance(first, JobError) and first.status == 400 and first.param == param
    first, texts, _ = asyncio.run(collect(server, job(PROMPT)))
    assert isinstance(first, JobAccepted) and texts[0]
    assert server.engine.pool.num_free == server.engine.pool.num_blocks


def test_a_failed_step_ends_the_job_with_a_500_and_the_server_recovers(
        tiny_model, codec) -> None:
    class FlakyExecutor(ModelExecutor):
        num_steps = 0

        def step(self, plan):  # noqa: ANN001, ANN202
            FlakyExecutor.num_steps += 1
            if FlakyExecutor.num_steps == 3:
                raise RuntimeError("rank 1 died")
            return super().step(plan)

    def factory(config: TandemConfig) -> LLMEngine:
        ec = config.engine_config()
        return LLMEngine(FlakyExecutor(tiny_model, ec.num_blocks, ec.block_size),
                         tiny_model.config, codec, ec)

    server = ModelServer(load_config({"model": {"num_kv_blocks": 64}}), factory)
    _, _, events = asyncio.run(collect_all(server, job(PROMPT, max_tokens=20, mode=Mode.AR)))
    assert isinstance(events[-1], JobError) and events[-1].status == 500
    assert "rank 1 died" in events[-1].message
    first, texts, _ = asyncio.run(collect(server, job(PROMPT)))
    assert isinstance(first, JobAccepted) and texts[0]
    assert server.engine.pool.num_free == server.engine.pool.num_blocks


async def collect_all(server: ModelServer, j: GenerateJob) -> tuple[object, None, list]:
    items = [item async for item in server.generate(j)]
    return items[0], None, items[1:]


@pytest.mark.parametrize("broken", ["admit", "plan"])
def test_a_broken_policy_fails_loudly_with_a_500(tiny_model, codec, caplog, broken) -> None:
    """No silent first-come fallback: the request gets a 500, the cause is logged at ERROR
    and counted in tandem_engine_errors_total."""
    from engine.policy import FirstComePolicy

    class BrokenPolicy(FirstComePolicy):
        def admit(self, req, sched):  # noqa: ANN001, ANN202
            if broken == "admit":
                raise KeyError("profile has no such step cost")

        def plan(self, view):  # noqa: ANN001, ANN202
            if broken == "plan":
                raise ZeroDivisionError("empty fit")
            return super().plan(view)

    def factory(config: TandemConfig) -> LLMEngine:
        ec = config.engine_config()
        return LLMEngine(ModelExecutor(tiny_model, ec.num_blocks, ec.block_size),
                         tiny_model.config, codec, ec, BrokenPolicy())

    server = ModelServer(load_config({"model": {"num_kv_blocks": 64}}), factory)
    with caplog.at_level("ERROR"):
        first, _, rest = asyncio.run(collect_all(server, job(PROMPT, mode=Mode.AR)))
    error = first if broken == "admit" else rest[-1]
    assert isinstance(error, JobError) and error.status == 500
    cause = "KeyError" if broken == "admit" else "empty fit"
    assert cause in error.message
    assert any(r.levelname == "ERROR" for r in caplog.records)
    stage = "admit" if broken == "admit" else "step"
    assert f'tandem_engine_errors_total{{model="tandem-tiny",stage="{stage}"}} 1.0' in (
        server.prom.text())
    assert server.engine.stats().kv_free_blocks == server.engine.stats().kv_blocks


def test_a_jobs_own_stream_interval_coalesces_its_tokens(server: ModelServer) -> None:
    """A batch job's requests (cluster/batch/adapter.py) ask for fewer, larger chunks."""
    async def lists(interval: float | None) -> tuple[int, str]:
        """(messages sent after JobAccepted, the text)."""
        j = replace(job(PROMPT, max_tokens=24, mode=Mode.AR), stream_interval_ms=interval)
        items = [item async for item in server.generate(j)][1:]
        return len(items), "".join(ChoiceEvent.from_wire(e).text for i in items for e in i)

    every_step, text = asyncio.run(lists(0.0))
    coalesced, same = asyncio.run(lists(10_000.0))
    assert every_step >= 24 and coalesced <= 2 and same == text
