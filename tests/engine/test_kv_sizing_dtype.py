"""The KV cache sized from memory (engine/kv_sizing.py) and the serving dtype (models/dtype.py)
on the shipped model: the chosen size matches the bytes actually allocated, and a bf16 engine
holds weights and cache in bf16 and runs every mode on CPU."""

from __future__ import annotations

import asyncio

import pytest
import torch

from cluster.config import load_config
from cluster.model_server import ModelServer
from engine.engine import EngineConfig, LLMEngine
from engine.kv_sizing import KVRequest, block_bytes
from engine.params import DecodeParams, Mode, SamplingParams
from models.checkpoint import DEFAULT_MODEL_DIR
from models.dtype import resolve_dtype


def cache_bytes(engine: LLMEngine) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size()
               for k, v in engine.executor.caches)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cpu_memory_sizes_the_cache(dtype: str) -> None:
    gb = 0.01
    engine = LLMEngine.from_checkpoint(config=EngineConfig(block_size=16), dtype=dtype,
                                       kv=KVRequest(cpu_memory_gb=gb))
    per_block = block_bytes(engine.model_config, 16, getattr(torch, dtype))
    assert engine.kv_sizing.num_blocks == int(gb * 2**30) // per_block
    assert engine.pool.num_blocks == engine.kv_sizing.num_blocks
    assert cache_bytes(engine) == engine.kv_sizing.num_blocks * per_block <= gb * 2**30
    assert engine.kv_sizing.source == f"kv_cache_memory_gb={gb}"


def test_num_kv_blocks_overrides_and_default() -> None:
    over = LLMEngine.from_checkpoint(kv=KVRequest(num_blocks=40, cpu_memory_gb=1.0))
    assert over.pool.num_blocks == 40 and over.kv_sizing.source == "num_kv_blocks"
    default = LLMEngine.from_checkpoint(kv=KVRequest())
    assert default.pool.num_blocks == 512 and default.kv_sizing.source == "default"
    with pytest.raises(ValueError, match="kv_cache_memory_gb: .* no room for one KV block"):
        LLMEngine.from_checkpoint(kv=KVRequest(cpu_memory_gb=1e-6))


def test_health_shows_the_chosen_size() -> None:
    config = load_config({"model": {"kv_cache_memory_gb": 0.005, "policy": "first_come"}})
    server = ModelServer(config)  # at tp = 1 the engine runs in an engine-core process
    try:
        health = asyncio.run(server.health())
    finally:
        server.loop.shutdown()
    # The same request sized in this process: what the engine core must have allocated.
    local = LLMEngine.from_checkpoint(config=config.engine_config(), kv=config.kv_request())
    assert health["kv_cache"]["source"] == "kv_cache_memory_gb=0.005"
    assert health["kv_blocks"] == health["kv_cache"]["num_blocks"] == local.pool.num_blocks


def test_dtype_auto_is_the_checkpoints_on_cuda_and_float32_on_cpu() -> None:
    assert resolve_dtype("auto", DEFAULT_MODEL_DIR, "cpu") == "float32"
    assert resolve_dtype("auto", DEFAULT_MODEL_DIR, "cuda") == "bfloat16"  # its torch_dtype
    assert resolve_dtype("float16", DEFAULT_MODEL_DIR, "cpu") == "float16"
    with pytest.raises(ValueError, match="dtype: 'fp8'"):
        resolve_dtype("fp8", DEFAULT_MODEL_DIR, "cpu")


def test_bf16_engine_runs_every_mode_in_bf16_on_cpu() -> None:
    engine = LLMEngine.from_checkpoint(config=EngineConfig(num_blocks=64), dtype="bfloat16")
    assert {p.dtype for p in engine.executor.model.parameters()} == {torch.bfloat16}
    assert {k.dtype for k, _ in engine.executor.caches} == {torch.bfloat16}
    sp = SamplingParams(max_tokens=12, ignore_eos=True)
    ar = engine.generate(["def parse_args("], sp)[0]
    for mode in (Mode.SPEC_LINEAR, Mode.SPEC_QUADRATIC):  # lossless in bf16 too
        out = engine.generate(["def parse_args("], sp, DecodeParams(mode=mode))[0]
        assert out.token_ids == ar.token_ids, mode
    diff = engine.generate(["def parse_args("], sp, DecodeParams(mode=Mode.DIFFUSION))[0]
    assert len(diff.token_ids) == 12 and diff.text
