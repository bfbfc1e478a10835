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
    kvh, d = k_cache.shape[2], k_cache.shape[3]
    if bool((slots < 0).any()):
        keep = slots >= 0
        slots, k, v = slots[keep], k[keep], v[keep]
    slots = slots.long()
    k_cache.view(-1, kvh, d).index_copy_(0, slots, k.to(k_cache.dtype))
    v_cache.view(-1, kvh, d).index_copy_(0, slots, v.to(v_cache.dtype))
