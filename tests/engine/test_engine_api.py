"""The engine's API for servers: check() names the field at fault with a typed error,
stats() reports the engine's state, and outputs carry logprobs when a request asks."""

from __future__ import annotations

import pytest

from engine.engine import EngineConfig, LLMEngine
from engine.logprobs import LogprobScorer, ScoreRequest
from engine.params import DecodeParams, Mode, SamplingParams
from engine.request_error import RequestError


@pytest.fixture
def engine(tiny_model, codec) -> LLMEngine:
    from engine.executor import ModelExecutor

    config = EngineConfig(num_blocks=16, block_size=16, max_model_len=200)
    return LLMEngine(ModelExecutor(tiny_model, 16, 16), tiny_model.config, codec, config)


@pytest.mark.parametrize("ids, sampling, decode, param", [
    ([], SamplingParams(), DecodeParams(), "prompt"),
    ([5] * 200, SamplingParams(), DecodeParams(), "prompt"),
    ([5] * 10, SamplingParams(max_tokens=195), DecodeParams(), "max_tokens"),
    ([5, 10**6], SamplingParams(), DecodeParams(), "prompt"),
    ([5] * 10, SamplingParams(), DecodeParams(Mode.SPEC_QUADRATIC, block_length=64),
     "block_length"),
])
def test_check_names_the_field(engine: LLMEngine, ids, sampling, decode, param) -> None:
    with pytest.raises(RequestError) as err:
        engine.check(ids, sampling, decode)
    assert err.value.param == param and err.value.message == str(err.value)
    assert ":" not in err.value.message.split(" ")[0]  # no "field: message" to parse back


def test_check_refuses_what_the_kv_cache_cannot_hold(tiny_model, codec) -> None:
    from engine.executor import ModelExecutor

    config = EngineConfig(num_blocks=4, block_size=16, max_model_len=200)
    small = LLMEngine(ModelExecutor(tiny_model, 4, 16), tiny_model.config, codec, config)
    with pytest.raises(RequestError) as err:
        small.add_request([5] * 10, SamplingParams(max_tokens=100))
    assert err.value.param == "max_tokens" and "KV blocks" in err.value.message
    assert not small.has_unfinished()


def test_stats_follow_the_requests(engine: LLMEngine) -> None:
    st = engine.stats()
    assert (st.num_running, st.num_waiting, st.kv_free_blocks) == (0, 0, st.kv_blocks)
    engine.add_request("def f(", SamplingParams(max_tokens=4, seed=1))
    assert engine.stats().num_waiting == 1
    engine.step()
    st = engine.stats()
    assert st.num_running == 1 and st.kv_free_blocks < st.kv_blocks and st.num_steps == 1


@pytest.mark.parametrize("mode", [Mode.AR, Mode.SPEC_QUADRATIC])
def test_outputs_carry_the_logprobs_of_the_full_pass(engine: LLMEngine, mode: Mode) -> None:
    prompt = engine.tokenize("def parse_args(argv):")
    req = engine.add_request(prompt, SamplingParams(max_tokens=12, temperature=0.8, seed=2),
                             DecodeParams(mode=mode), logprobs=True)
    other = engine.add_request("import os", SamplingParams(max_tokens=12, seed=3))
    full = LogprobScorer(engine.executor, engine.codec.decode)
    seen = 0
    while engine.has_unfinished():
        for out in engine.step():
            if out.request_id == other.id:
                assert out.logprobs is None
                continue
            assert len(out.logprobs) == len(out.new_token_ids)
            if not out.new_token_ids:
                continue
            ids = prompt + out.token_ids
            want = full.score([ScoreRequest(ids, len(ids) - len(out.new_token_ids))])[0]
            for got, ref in zip(out.logprobs, want, strict=True):
                assert got.token_id == ref.token_id and got.top_token_id == ref.top_token_id
                assert abs(got.logprob - ref.logprob) < 1e-4
            seen += len(out.new_token_ids)
    assert seen == len(req.output_ids) == 12
    assert engine.stats().kv_free_blocks == engine.stats().kv_blocks
