"""Logprobs read the request's KV cache instead of re-running the whole sequence: the numbers
must be those of the full causal pass, in every mode, at every step."""

from __future__ import annotations

import pytest

from engine.engine import EngineConfig, LLMEngine
from engine.logprobs import LogprobScorer, ScoreRequest
from engine.params import DecodeParams, Mode, SamplingParams

PROMPTS = ["def parse_args(argv):", "import os\nimport sys\n", "class Config:", "# Licensed"]
MODES = [Mode.AR, Mode.SPEC_LINEAR, Mode.SPEC_QUADRATIC, Mode.DIFFUSION]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_cached_scoring_equals_the_full_pass(temperature: float) -> None:
    engine = LLMEngine.from_checkpoint(config=EngineConfig(num_blocks=64))
    scorer = LogprobScorer(engine.executor, lambda ids: "")
    sampling = SamplingParams(max_tokens=24, temperature=temperature, seed=3, ignore_eos=True)
    prompts = {engine.add_request(p, sampling, DecodeParams(mode=m)).id: engine.tokenize(p)
               for p, m in zip(PROMPTS, MODES, strict=True)}
    num_cached_scored = 0
    while engine.has_unfinished():
        for out in engine.step():
            req = engine.scheduler.requests.get(out.request_id)
            if not out.new_token_ids or out.finished or req is None:
                continue
            ids = prompts[out.request_id] + out.token_ids
            first = len(ids) - len(out.new_token_ids)
            cached = ScoreRequest(ids, first, req.cache.num_cached, list(req.cache.block_table))
            got, want = scorer.score([cached, ScoreRequest(ids, first)])
            assert [e.token_id for e in got] == out.new_token_ids
            assert [e.top_token_id for e in got] == [e.top_token_id for e in want]
            for a, b in zip(got, want, strict=True):
                assert abs(a.logprob - b.logprob) < 1e-4
                assert abs(a.top_logprob - b.top_logprob) < 1e-4
            num_cached_scored += req.cache.num_cached > 0
    assert num_cached_scored > 10  # the cache path really ran, in all modes together
    assert engine.pool.num_free == engine.pool.num_blocks
