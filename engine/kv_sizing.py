"""How many KV cache blocks an engine gets, from memory as vLLM users expect.

In order: `num_kv_blocks` when given (an override); on CUDA, `gpu_memory_utilization` of the
device after the weights and a measured activation peak (one forward of max_batch_tokens);
on CPU, `kv_cache_memory_gb` per rank; else DEFAULT_NUM_BLOCKS. The dtype of the cache is
the model's. The choice is logged and shown in /health.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from models.config import ModelConfig

log = logging.getLogger(__name__)
DEFAULT_NUM_BLOCKS = 512


@dataclass(frozen=True)
class KVRequest:
    """What the deployment asked for (any of the three, or none)."""

    num_blocks: int | None = None
    cpu_memory_gb: float | None = None
    gpu_memory_utilization: float | None = None

    def __post_init__(self) -> None:
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"num_kv_blocks must be >= 1, got {self.num_blocks}")
        if self.cpu_memory_gb is not None and self.cpu_memory_gb <= 0:
            raise ValueError(f"kv_cache_memory_gb must be > 0, got {self.cpu_memory_gb}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1], got "
                             f"{self.gpu_memory_utilization}")


@dataclass(frozen=True)
class KVSizing:
    num_blocks: int
    block_bytes: int  # one block, all layers, k and v, on one rank
    source: str  # what decided num_blocks

    def describe(self) -> dict[str, object]:
        return {"num_blocks": self.num_blocks, "bytes_per_rank": self.num_blocks * self.block_bytes,
                "source": self.source}


def block_bytes(config: ModelConfig, block_size: int, dtype: torch.dtype, tp: int = 1) -> int:
    kv_heads = max(1, config.num_kv_heads // tp)  # replicated when fewer kv heads than ranks
    item = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_layers * block_size * kv_heads * config.head_dim * item


def size_kv(request: KVRequest, config: ModelConfig, block_size: int, dtype: torch.dtype,
            device: str, tp: int = 1, free_gpu_bytes: int | None = None) -> KVSizing:
    """free_gpu_bytes: what measure_gpu_budget left for the cache (CUDA only)."""
    per_block = block_bytes(config, block_size, dtype, tp)
    if request.num_blocks is not None:
        sizing = KVSizing(request.num_blocks, per_block, "num_kv_blocks")
    elif device.startswith("cuda") and request.gpu_memory_utilization is not None:
        if free_gpu_bytes is None:
            raise ValueError("gpu_memory_utilization: measured on the rank's device at tp = 1 "
                             "only; set num_kv_blocks for tp >= 2")
        sizing = _from_bytes(free_gpu_bytes, per_block,
                             f"gpu_memory_utilization={request.gpu_memory_utilization}")
    elif request.cpu_memory_gb is not None:
        sizing = _from_bytes(int(request.cpu_memory_gb * 2**30), per_block,
                             f"kv_cache_memory_gb={request.cpu_memory_gb}")
    else:
        sizing = KVSizing(DEFAULT_NUM_BLOCKS, per_block, "default")
    log.info("KV cache: %d blocks of %d tokens, %.1f MiB per rank (%s)", sizing.num_blocks,
             block_size, sizing.num_blocks * per_block / 2**20, sizing.source)
    return sizing


def _from_bytes(budget: int, per_block: int, source: str) -> KVSizing:
    num = budget // per_block
    if num < 1:
        raise ValueError(f"{source.split('=')[0]}: {budget / 2**20:.1f} MiB leaves no room for "
                         f"one KV block of {per_block / 2**20:.2f} MiB")
    return KVSizing(int(num), per_block, source)


def measure_gpu_budget(model: torch.nn.Module, utilization: float, max_batch_tokens: int) -> int:
    """Bytes for the KV cache on the model's CUDA device: utilization x device memory, less
    what is in use (the weights, other processes) and the activation peak of one forward of
    max_batch_tokens tokens. Written for CUDA; not run on this project's CPU-only CI."""
    from models.batch import Chunk, ChunkBatch

    device = next(model.parameters()).device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    n = min(max_batch_tokens, model.config.max_position_embeddings)
    with torch.inference_mode():
        model(ChunkBatch.from_chunks([Chunk.causal([0] * n)], device))
    torch.cuda.synchronize(device)
    activation = torch.cuda.max_memory_allocated(device) - base
    torch.cuda.empty_cache()
    return int(total * utilization) - (total - free) - activation
