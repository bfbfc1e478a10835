"""An LLMEngine over a verify pool and draft pool replicas: the fused engine plus the
`spec_pipelined` mode (engine/modes/spec_pipelined.py).

The driver keeps one block pool per draft replica beside the verify pool's; a sweep before
each schedule frees the draft caches of requests that finished, were aborted, preempted or
switched mode. `disaggregated_engine()` starts the pools as shard groups, each in its own
STRICT_PACK placement group (a pool packed on one node; the pools may sit on different
nodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ray.util.placement_group import PlacementGroup

from actors.shard_group import ShardGroupConfig, ShardGroupExecutor
from actors.shard_worker import DTYPES
from actors.speculation_pools import PoolStats, SpeculationPools
from engine.engine import EngineConfig, LLMEngine, RequestOutput
from engine.kv_cache import BlockPool, KVCacheManager
from engine.modes.spec_pipelined import SpecPipelinedMode
from engine.params import Mode
from engine.policy import SchedulingPolicy
from models.config import ModelConfig
from models.tokenizer import TextCodec


@dataclass(frozen=True)
class PoolShape:
    """One pool's shard groups: tp ranks each, in this dtype, `replicas` groups."""

    tp: int = 1
    dtype: str = "float32"
    replicas: int = 1

    def __post_init__(self) -> None:
        if self.tp < 1 or self.replicas < 1:
            raise ValueError(f"tp and replicas must be >= 1, got {self.tp}, {self.replicas}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")


class PipelinedEngine(LLMEngine):
    def __init__(self, pools: SpeculationPools, model_config: ModelConfig,
                 codec: TextCodec | None, config: EngineConfig | None = None,
                 policy: SchedulingPolicy | None = None, hedge: bool = False) -> None:
        config = config or EngineConfig()
        super().__init__(pools, model_config, codec, config, policy)
        self.pools = pools
        # A draft cache is never longer than the verify cache's reservation (p + B), so
        # a draft pool as large as the verify pool runs dry only when prefixes are shared
        # there; the mode then takes an AR step instead of a draft.
        draft_kv = [KVCacheManager(BlockPool(config.num_blocks, config.block_size))
                    for _ in range(pools.num_draft_replicas)]
        self.pipelined = SpecPipelinedMode(self.scheduler.ctx, pools, draft_kv, hedge)
        self.scheduler.modes[Mode.SPEC_PIPELINED] = self.pipelined

    def step(self) -> list[RequestOutput]:
        self.pipelined.sweep(self.scheduler.running)  # aborts since the last step
        outs = super().step()
        self.pipelined.sweep(self.scheduler.running)  # finished or preempted in this one
        return outs

    def pool_stats(self) -> dict[str, PoolStats]:
        return {"verify": self.pools.verify_stats, "draft": self.pools.draft_stats()}


def disaggregated_engine(model_dir: str | Path, verify: PoolShape, draft: PoolShape,
                         config: EngineConfig | None = None, device: str = "cpu",
                         policy: SchedulingPolicy | None = None, hedge: bool = False,
                         verify_placement: PlacementGroup | None = None,
                         verify_bundle_offset: int = 0,
                         **group_options: object) -> PipelinedEngine:
    """Verify pool (verify.tp ranks) + draft.replicas draft groups (draft.tp ranks each).
    The verify group may go into a placement group handed in (a Serve replica's); each
    draft group reserves its own. group_options go to every ShardGroupConfig."""
    from actors.engine_factory import ensure_ray

    model_dir, config = Path(model_dir), config or EngineConfig()
    model_config = ModelConfig.from_json(model_dir / "config.json")
    codec = TextCodec.load(model_dir)

    def group(shape: PoolShape) -> ShardGroupConfig:
        return ShardGroupConfig(str(model_dir), shape.tp, config.num_blocks, config.block_size,
                                device=device, dtype=shape.dtype,
                                **group_options)  # type: ignore[arg-type]

    started_ray = ensure_ray(verify.tp + draft.tp * draft.replicas)
    executors: list[ShardGroupExecutor] = []
    try:
        executors.append(ShardGroupExecutor(group(verify), verify_placement,
                                            verify_bundle_offset))
        for _ in range(draft.replicas):
            executors.append(ShardGroupExecutor(group(draft)))
    except BaseException:
        for ex in executors:
            ex.shutdown()
        if started_ray:
            import ray

            ray.shutdown()
        raise
    pools = SpeculationPools(executors[0], executors[1:])
    if started_ray:
        import ray

        pools.on_shutdown.append(ray.shutdown)
    return PipelinedEngine(pools, model_config, codec, config, policy, hedge)
