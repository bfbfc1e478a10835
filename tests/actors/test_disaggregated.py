"""Draft and verify pools as Ray shard groups: draft tp=1 beside verify tp=2, outputs equal
the fused engine's AR; a killed draft actor degrades its requests to AR (same tokens) and
the draft pool is rebuilt; a killed verify actor fails its requests with the rank named
within the step timeout, and the verify group is rebuilt."""

from __future__ import annotations

import time

import pytest
import ray

from actors.pipelined_engine import PipelinedEngine, PoolShape, disaggregated_engine
from engine.engine import EngineConfig, LLMEngine, StepFailed
from engine.params import DecodeParams, Mode, SamplingParams
from models.checkpoint import DEFAULT_MODEL_DIR
from models.heldout import load_prompts
from tests.engine.helpers import make_engine

NUM_BLOCKS = 128
STEP_TIMEOUT_S = 8.0
PIPELINED = DecodeParams(mode=Mode.SPEC_PIPELINED, block_length=4)


@pytest.fixture(scope="module")
def engine(ray_session) -> PipelinedEngine:
    eng = disaggregated_engine(DEFAULT_MODEL_DIR, verify=PoolShape(tp=2),
                               draft=PoolShape(tp=1), config=EngineConfig(num_blocks=NUM_BLOCKS),
                               step_timeout_s=STEP_TIMEOUT_S)
    yield eng
    eng.executor.shutdown()


@pytest.fixture(scope="module")
def fused(tiny_model, codec) -> LLMEngine:
    return make_engine(tiny_model, codec, num_blocks=NUM_BLOCKS)


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return load_prompts(num=3)


def _ar(fused: LLMEngine, prompts: list[str], samplings: list[SamplingParams]) -> list[list]:
    return [fused.generate([p], s, DecodeParams(mode=Mode.AR))[0].token_ids
            for p, s in zip(prompts, samplings, strict=True)]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_draft_tp1_verify_tp2_equal_ar_alone_and_mixed(engine, fused, prompts,
                                                       temperature) -> None:
    samplings = [SamplingParams(max_tokens=16, temperature=temperature, seed=20 + i,
                                ignore_eos=True) for i in range(len(prompts))]
    want = _ar(fused, prompts, samplings)
    alone = engine.generate(prompts[:1], samplings[0], PIPELINED)[0]
    assert alone.token_ids == want[0]
    mixed = engine.generate(prompts, samplings, [PIPELINED, DecodeParams(mode=Mode.AR),
                                                 DecodeParams(mode=Mode.SPEC_LINEAR)])
    assert [o.token_ids for o in mixed] == want
    stats = engine.pool_stats()
    assert stats["draft"].num_forwards > 0 and stats["verify"].num_forwards > 0
    assert engine.pipelined.draft_blocks_in_use() == [0]


def test_killed_draft_actor_degrades_to_ar_and_the_pool_is_rebuilt(engine, fused,
                                                                   prompts) -> None:
    pools = engine.pools
    samplings = [SamplingParams(max_tokens=24, temperature=0.8, seed=40 + i, ignore_eos=True)
                 for i in range(2)]
    reqs = [engine.add_request(p, s, PIPELINED) for p, s in zip(prompts[:2], samplings,
                                                                 strict=True)]
    for _ in range(3):
        engine.step()
    ray.kill(pools.replicas[0].executor.workers[0], no_restart=True)
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    assert [done[r.id].token_ids for r in reqs] == _ar(fused, prompts[:2], samplings)
    assert all(done[r.id].modes.get("ar", 0) > 0 for r in reqs)  # finished on the verifier
    assert pools.draft_stats().num_failures == 1
    assert pools.wait_draft_ready(120.0), pools.replicas[0].rebuild_error
    assert pools.draft_stats().num_rebuilds == 1
    before = pools.draft_stats().num_forwards
    again = engine.generate(prompts[:1], samplings[0], PIPELINED)[0]
    assert again.token_ids == done[reqs[0].id].token_ids
    assert pools.draft_stats().num_forwards > before  # the rebuilt pool drafts again


def test_killed_verify_actor_fails_its_requests_in_time_and_is_rebuilt(engine, fused,
                                                                       prompts) -> None:
    sampling = SamplingParams(max_tokens=16, temperature=0.0, seed=3, ignore_eos=True)
    engine.add_request(prompts[0], sampling, PIPELINED)
    engine.step()
    ray.kill(engine.pools.verify.workers[1], no_restart=True)
    start = time.monotonic()
    with pytest.raises(StepFailed, match="shard rank 1: actor died") as failed:
        while engine.has_unfinished():
            engine.step()
    assert time.monotonic() - start < STEP_TIMEOUT_S
    assert [o.finish_reason for o in failed.value.outputs] == ["error"]
    assert engine.pipelined.draft_blocks_in_use() == [0] or engine.step() == []
    again = engine.generate(prompts[:1], sampling, PIPELINED)[0]  # rebuilt on this step
    assert again.token_ids == _ar(fused, prompts[:1], [sampling])[0]
