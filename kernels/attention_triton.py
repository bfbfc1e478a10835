"""Attention over the paged KV cache plus the chunk's own keys, for a ragged batch of chunks:
the launcher of kernels/attention_kernels.py.

One kernel serves prefill, AR decode, diffusion denoising, verification and the quadratic
layout: a query token sees every cached entry of its request and, inside its chunk, key k
when k <= causal_limit[q] or block_lo[q] <= k < block_hi[q] (models/batch.py). The launch
reads only host integers (shapes, plan.max_chunk_len, plan.max_context_len): no host sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton

from kernels import buffers
from kernels.attention_kernels import _attention_kernel, _combine_kernel
from kernels.attention_ref import AttentionPlan

_LOG2E = 1.4426950408889634
_SM_COUNT: dict[torch.device, int] = {}
MAX_SPLITS = 16


@dataclass(frozen=True)
class LaunchConfig:
    block_q: int  # query tokens per program
    block_m: int  # rows per program: block_q * G padded to a power of two >= 16
    tile_n: int  # keys per step
    num_splits: int  # programs sharing one key range (flash-decoding)
    seg_len: int  # keys per split, a multiple of tile_n
    one_tile: bool  # every chunk fits one program
    num_tiles: int  # grid axis 0
    num_warps: int
    num_stages: int


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: small, so that CPU tests exercise the split path
    if device not in _SM_COUNT:
        _SM_COUNT[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SM_COUNT[device]


def launch_config(num_tokens: int, num_chunks: int, num_kv_heads: int, group: int,
                  head_dim: int, max_chunk_len: int, max_context_len: int,
                  device: torch.device, is_fp32: bool = False,
                  num_splits: int | None = None) -> LaunchConfig:
    """Tile sizes by head dim and chunk length; splits when the grid is small for the GPU."""
    # acc [BLOCK_M, D] fp32 stays in registers: at D=128 a 64-row tile takes ~240 registers
    # per thread in fp16 (bench/compile_check.py, sm_90); fp32 (full-precision FMA dots)
    # spilled at half that and fits at a quarter.
    rows_cap = (64 if head_dim > 64 else 128) // (4 if is_fp32 else 1)
    block_q = min(triton.next_power_of_2(max(1, max_chunk_len)), max(1, rows_cap // group))
    block_m = max(16, triton.next_power_of_2(block_q * group))
    one_tile = block_q >= max_chunk_len
    num_tiles = num_chunks if one_tile else num_tokens // block_q + num_chunks
    tile_n = 64 if head_dim <= 128 else 32
    kv_len = max_context_len + max_chunk_len
    if num_splits is None:
        programs = max(1, (num_chunks if one_tile else math.ceil(num_tokens / block_q))
                       * num_kv_heads)
        kv_bytes = 2 * num_chunks * kv_len * num_kv_heads * head_dim * (4 if is_fp32 else 2)
        # Unmeasured choices (set without GPU access; bench/kernels.py times splits 1/2/4/8
        # beside this heuristic): split only when the grid fills under about two programs
        # per SM, and only when K/V are big enough (>= 32 MB) for the second launch (the
        # combine) to pay for itself; each split keeps at least two tiles, and the partial
        # outputs ([rows, S, D] fp32, written and read back) stay under about half of the
        # K/V bytes.
        want = math.ceil(2 * _sm_count(device) / programs) if kv_bytes >= 2**25 else 1
        by_len = kv_len // (2 * tile_n)
        by_traffic = kv_len // (4 * group * max(1, max_chunk_len))
        num_splits = max(1, min(MAX_SPLITS, want, by_len, by_traffic))
    seg_len = math.ceil(math.ceil(kv_len / num_splits) / tile_n) * tile_n
    num_splits = max(1, math.ceil(kv_len / seg_len))
    num_warps = 8 if block_m >= 128 else 4
    num_stages = 3 if block_m * head_dim <= 64 * 64 else 2
    return LaunchConfig(block_q, block_m, tile_n, num_splits, seg_len, one_tile, num_tiles,
                        num_warps, num_stages)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor | None,
           v_cache: torch.Tensor | None, plan: AttentionPlan) -> None:
    t, h, d = q.shape
    if k.dim() != 3 or k.shape != v.shape or k.shape[0] != t or k.shape[2] != d:
        raise ValueError(f"attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v "
                         f"{tuple(v.shape)} must be [T, H, D], [T, KVH, D], [T, KVH, D]")
    if h % k.shape[1]:
        raise ValueError(f"attention: {h} query heads do not group over {k.shape[1]} kv heads")
    if k_cache is None and plan.max_context_len:
        raise ValueError("attention: the plan reads a cache but none was given")
    if k_cache is not None and (
            k_cache.dim() != 4 or v_cache is None or v_cache.shape != k_cache.shape
            or k_cache.shape[2:] != k.shape[1:] or v_cache.stride() != k_cache.stride()
            or k_cache.stride(-1) != 1):
        raise ValueError(f"attention: caches {tuple(k_cache.shape)} must be [num_blocks, "
                         f"block_size, {k.shape[1]}, {d}], one layout, D contiguous")
    n = plan.num_chunks
    for name in ("causal_limit", "block_lo", "block_hi"):
        if getattr(plan, name).shape != (t,):
            raise ValueError(f"attention: plan.{name} must have {t} entries")
    if plan.context_lens.shape != (n,) or plan.block_tables.shape[0] != n:
        raise ValueError(f"attention: plan.context_lens / block_tables must have {n} rows")


def attention_triton(
    q: torch.Tensor,  # [T, H, D]
    k: torch.Tensor,  # [T, KVH, D] the chunk's new keys (already rotated)
    v: torch.Tensor,  # [T, KVH, D]
    k_cache: torch.Tensor | None,  # [num_blocks, block_size, KVH, D]
    v_cache: torch.Tensor | None,
    plan: AttentionPlan,
    scale: float,
    num_splits: int | None = None,  # tests force the split path; None = heuristic
) -> torch.Tensor:  # [T, H, D]
    _check(q, k, v, k_cache, v_cache, plan)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    t, h, d = q.shape
    kvh = k.shape[1]
    out = buffers.empty((t, h, d), q.dtype, q.device)
    if t == 0:
        return out
    has_cache = k_cache is not None and plan.max_context_len > 0
    cfg = launch_config(t, plan.num_chunks, kvh, h // kvh, d, plan.max_chunk_len,
                        plan.max_context_len if has_cache else 0, q.device,
                        q.dtype == torch.float32, num_splits)
    block_d = max(16, triton.next_power_of_2(d))
    if cfg.num_splits > 1:
        part_acc = buffers.empty((t, h, cfg.num_splits, block_d), torch.float32, q.device)
        part_ml = buffers.empty((t, h, cfg.num_splits, 2), torch.float32, q.device)
    else:
        part_acc = part_ml = out  # never touched
    cache_k = k_cache if has_cache else k
    cache_v = v_cache if has_cache else v
    table = plan.block_tables if plan.block_tables.stride(-1) == 1 else \
        plan.block_tables.contiguous()
    _attention_kernel[(cfg.num_tiles, kvh, cfg.num_splits)](
        out, part_acc, part_ml, q, k, v, cache_k, cache_v,
        plan.cu_seqlens, plan.causal_limit, plan.block_lo, plan.block_hi,
        plan.context_lens, table,
        plan.num_chunks, scale * _LOG2E, cfg.seg_len,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1),
        cache_k.stride(0) if has_cache else 0, cache_k.stride(1) if has_cache else 0,
        cache_k.stride(2) if has_cache else 0, table.stride(0),
        G=h // kvh, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_Q=cfg.block_q, BLOCK_M=cfg.block_m,
        TILE_N=cfg.tile_n, PAGE=k_cache.shape[1] if has_cache else 1,
        NUM_SPLITS=cfg.num_splits, HAS_CACHE=has_cache, ONE_TILE=cfg.one_tile,
        # fp32 inputs multiply in full fp32 (the reference does); half inputs use fp16 MMA.
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    if cfg.num_splits > 1:
        _combine_kernel[(t, h)](
            out, part_acc, part_ml, out.stride(0), out.stride(1),
            HEAD_DIM=d, BLOCK_D=block_d, NUM_SPLITS=cfg.num_splits,
            BLOCK_S=max(2, triton.next_power_of_2(cfg.num_splits)), num_warps=1)
    return out
