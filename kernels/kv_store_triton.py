"""Store a chunk's new keys/values into paged cache slots: BLOCK_T tokens per program.

A slot is block * block_size + offset; -1 skips the token (kernels/kv_store_ref.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

TILE_ELEMENTS = 4096  # tokens per program = this / (KVH * D), rounded to a power of 2


@triton.jit
def _store_kv_kernel(
    k_cache, v_cache, k_ptr, v_ptr, slots_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_cb, stride_cs, stride_ch,  # k_cache and v_cache share a layout (checked)
    num_tokens, block_size, num_kv_heads, head_dim,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    slot = tl.load(slots_ptr + offs_t, mask=offs_t < num_tokens, other=-1).to(tl.int64)
    tok = offs_t[:, None, None]
    offs_h = tl.arange(0, BLOCK_H)[None, :, None]
    offs_d = tl.arange(0, BLOCK_D)[None, None, :]
    ok = (slot[:, None, None] >= 0) & (offs_h < num_kv_heads) & (offs_d < head_dim)
    page = tl.maximum(slot, 0)
    dst = ((page // block_size) * stride_cb + (page % block_size) * stride_cs)[:, None, None]
    dst += offs_h * stride_ch + offs_d  # [BLOCK_T, BLOCK_H, BLOCK_D]
    k = tl.load(k_ptr + tok * stride_kt + offs_h * stride_kh + offs_d, mask=ok)
    v = tl.load(v_ptr + tok * stride_vt + offs_h * stride_vh + offs_d, mask=ok)
    tl.store(k_cache + dst, k.to(k_cache.dtype.element_ty), mask=ok)
    tl.store(v_cache + dst, v.to(v_cache.dtype.element_ty), mask=ok)


def store_kv_triton(
    k_cache: torch.Tensor,  # [num_blocks, block_size, KVH, D]
    v_cache: torch.Tensor,
    k: torch.Tensor,  # [T, KVH, D]
    v: torch.Tensor,
    slots: torch.Tensor,  # [T] int flat slot ids; -1 = skip
) -> None:
    if k_cache.dim() != 4 or v_cache.shape != k_cache.shape or v_cache.stride() != k_cache.stride():
        raise ValueError(f"store_kv: caches {tuple(k_cache.shape)} / {tuple(v_cache.shape)} "
                         "must be [num_blocks, block_size, KVH, D] with one layout")
    t = k.shape[0]
    if k.shape != v.shape or k.shape[1:] != k_cache.shape[2:] or slots.shape != (t,):
        raise ValueError(f"store_kv: k {tuple(k.shape)}, v {tuple(v.shape)}, slots "
                         f"{tuple(slots.shape)} do not fit cache {tuple(k_cache.shape)}")
    if k_cache.stride(-1) != 1:
        raise ValueError("store_kv: the cache's head_dim must be contiguous")
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    if not t:
        return
    kvh, d = k.shape[1], k.shape[2]
    block_h, block_d = triton.next_power_of_2(kvh), triton.next_power_of_2(d)
    block_t = max(1, min(triton.next_power_of_2(t), TILE_ELEMENTS // (block_h * block_d)))
    _store_kv_kernel[(triton.cdiv(t, block_t),)](
        k_cache, v_cache, k, v, slots,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        t, k_cache.shape[1], kvh, d,
        BLOCK_T=block_t, BLOCK_H=block_h, BLOCK_D=block_d, num_warps=4)
