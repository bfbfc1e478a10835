"""Store a chunk's new keys/values into paged cache slots: the plain-torch reference."""

from __future__ import annotations

import torch

from kernels.host_reads import can_read_back


def store_kv_reference(
    k_cache: torch.Tensor,  # [num_blocks, block_size, KVH, D]
    v_cache: torch.Tensor,
    k: torch.Tensor,  # [T, KVH, D]
    v: torch.Tensor,
    slots: torch.Tensor,  # [T] int64 flat slot ids (block * block_size + offset); -1 = skip
) -> None:
    if slots.numel() == 0:
        return
    kvh, d = k_cache.shape[2], k_cache.shape[3]
    k_flat, v_flat = k_cache.view(-1, kvh, d), v_cache.view(-1, kvh, d)
    slots = slots.long()
    k, v = k.to(k_cache.dtype), v.to(v_cache.dtype)
    # On the CPU the host check is free, and the store takes 18 us at T = 64 with it against
    # 58 us through stand_in_skipped (tandem-tiny's cache, one thread: bench/sync_free_cost.py,
    # 2026-12-04).
    if not can_read_back(slots):
        slots, k, v = stand_in_skipped(k_flat, v_flat, k, v, slots)
    elif bool((slots < 0).any()):
        keep = slots >= 0
        slots, k, v = slots[keep], k[keep], v[keep]
    # Duplicate slots (only stand-ins) are fine: every copy to one slot is the same bytes.
    k_flat.index_copy_(0, slots, k)
    v_flat.index_copy_(0, slots, v)


def stand_in_skipped(k_flat: torch.Tensor, v_flat: torch.Tensor, k: torch.Tensor,
                     v: torch.Tensor, slots: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """slots, k, v with every skipped row (slot < 0) redirected to a stand-in slot, carrying
    the bytes that slot ends up holding anyway: no host decision, so no GPU sync. The stand-in
    is the first kept row's slot with that row's values; when no row is kept, slot 0 with its
    own current contents. k_flat, v_flat: [num_slots, KVH, D]; k, v: [T, KVH, D] (T >= 1) in
    the cache's dtype; slots: [T] int64."""
    skip = slots < 0  # [T]
    # [1] index tensors throughout: indexing with a 0-d tensor reads it back as a Python int.
    first = (~skip).int().argmax().reshape(1)  # 0 when every row is skipped
    is_kept = (~skip[first])[:, None, None]  # [1, 1, 1]
    stand_in = slots[first].clamp(min=0)  # [1]
    k_stand_in = torch.where(is_kept, k[first], k_flat[stand_in])  # [1, KVH, D]
    v_stand_in = torch.where(is_kept, v[first], v_flat[stand_in])
    rows_skipped = skip[:, None, None]
    return (torch.where(skip, stand_in, slots), torch.where(rows_skipped, k_stand_in, k),
            torch.where(rows_skipped, v_stand_in, v))
