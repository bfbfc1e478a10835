"""An LLMEngine whose executor is a group of tensor-parallel shard-worker actors.

The driver holds the scheduler, the cache bookkeeping, the model config and the tokenizer;
it never loads the weights. Each rank loads its own slices.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import ray
from ray.util.placement_group import PlacementGroup

from actors.shard_group import ShardGroupConfig, ShardGroupExecutor
from engine.engine import EngineConfig, LLMEngine
from engine.kv_sizing import KVRequest, size_kv
from engine.policy import SchedulingPolicy
from models.config import ModelConfig
from models.dtype import DTYPES, resolve_dtype
from models.tokenizer import TextCodec


def ensure_ray(tp: int) -> bool:
    """Start a local Ray when none is running (the command line); True if started here.
    With RAY_ADDRESS set, ray.init joins that cluster instead."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        # address="local": a Ray of our own, even where other jobs run theirs on the machine
        # (without it, ray.init joins the newest one and refuses num_cpus).
        ray.init(address="local", num_cpus=max(4, tp + 1), include_dashboard=False,
                 log_to_driver=False)
    return True


def sharded_engine(model_dir: str | Path, tp: int, config: EngineConfig | None = None,
                   device: str = "cpu", placement_group: PlacementGroup | None = None,
                   policy: SchedulingPolicy | None = None, bundle_offset: int = 0,
                   kv: KVRequest | None = None, **group_options: object) -> LLMEngine:
    """Engine over `tp` shard workers. group_options go to ShardGroupConfig (strategy,
    step_timeout_s, num_cpus_per_rank, dtype, ...). Starts a local Ray if none is running
    and shuts it down again with the executor."""
    model_dir, config = Path(model_dir), config or EngineConfig()
    model_config = ModelConfig.from_json(model_dir / "config.json")
    codec = TextCodec.load(model_dir)
    dtype = resolve_dtype(str(group_options.pop("dtype", "float32")), model_dir, device)
    sizing = None
    if kv is not None:  # every rank holds its share of the kv heads: sized per rank
        sizing = size_kv(kv, model_config, config.block_size, DTYPES[dtype], device, tp)
        config = replace(config, num_blocks=sizing.num_blocks)
    group = ShardGroupConfig(str(model_dir), tp, config.num_blocks, config.block_size,
                             device=device, dtype=dtype, **group_options)  # type: ignore[arg-type]
    started_ray = ensure_ray(tp)
    try:
        executor = ShardGroupExecutor(group, placement_group, bundle_offset)
    except BaseException:
        if started_ray:
            ray.shutdown()
        raise
    if started_ray:
        executor.on_shutdown.append(ray.shutdown)
    engine = LLMEngine(executor, model_config, codec, config, policy)
    engine.kv_sizing = sizing
    return engine
