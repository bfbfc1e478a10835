"""Shared helpers for engine tests: run prompts through an engine in given modes."""

from __future__ import annotations

from collections.abc import Sequence

from engine.engine import EngineConfig, LLMEngine, RequestOutput
from engine.executor import ModelExecutor
from engine.params import DecodeParams, SamplingParams
from engine.scheduler import SchedulerConfig
from models.config import ModelConfig
from models.tokenizer import TextCodec
from models.transformer import TriModeLM


def make_engine(model: TriModeLM, codec: TextCodec, max_num_seqs: int = 64,
                num_blocks: int = 1024, max_batch_tokens: int = 4096,
                model_config: ModelConfig | None = None) -> LLMEngine:
    config = EngineConfig(num_blocks=num_blocks, scheduler=SchedulerConfig(
        max_batch_tokens=max_batch_tokens, max_num_seqs=max_num_seqs))
    return LLMEngine(ModelExecutor(model, num_blocks), model_config or model.config, codec,
                     config)


def run(engine: LLMEngine, prompts: Sequence[str], modes: Sequence[str],
        max_tokens: Sequence[int], temperature: float = 0.0, seed: int = 0,
        block_length: int | None = None) -> list[RequestOutput]:
    samplings = [SamplingParams(max_tokens=m, temperature=temperature, seed=seed + i,
                                ignore_eos=True) for i, m in enumerate(max_tokens)]
    decodes = [DecodeParams(mode=m, block_length=block_length) for m in modes]
    return engine.generate(list(prompts), samplings, decodes)
