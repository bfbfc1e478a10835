"""Store a chunk's new keys/values into paged cache slots: the plain-torch reference."""

from __future__ import annotations

import torch


def store_kv_reference(
    k_cache: torch.Tensor,  # [num_blocks, block_size, KVH, D]
    v_cache: torch.Tensor,
    k: torch.Tensor,  # [T, KVH, D]
    v: torch.Tensor,
    slots: torch.Tensor,  # [T] int64 flat slot ids (block * block_size + offset); -1 = skip
) -> None:
    keep = slots >= 0
    kvh, d = k_cache.shape[2], k_cache.shape[3]
    k_cache.view(-1, kvh, d)[slots[keep]] = k[keep].to(k_cache.dtype)
    v_cache.view(-1, kvh, d)[slots[keep]] = v[keep].to(v_cache.dtype)
