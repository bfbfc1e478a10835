"""Plain-torch attention over a paged KV cache plus the chunk's own keys: the reference and
the CPU path. Visibility follows models/batch.py (causal_limit, block_lo, block_hi)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.attention_groups import split_groups


@dataclass
class AttentionPlan:
    """Index tensors built once per forward and shared by every layer."""

    cu_seqlens: torch.Tensor  # [N+1] int32
    causal_limit: torch.Tensor  # [T] int32
    block_lo: torch.Tensor  # [T] int32
    block_hi: torch.Tensor  # [T] int32
    context_lens: torch.Tensor  # [N] int32
    block_tables: torch.Tensor  # [N, M] int32
    max_chunk_len: int
    max_context_len: int
    # Sliding window (Mistral): query at position p sees keys at positions > p - window only.
    # Cached entry j holds position j; chunk tokens carry theirs in `positions` [T].
    window: int | None = None
    positions: torch.Tensor | None = None
    # reference-only: padding indices, dense mask, cache gather indices (built lazily)
    seq_idx: torch.Tensor | None = None  # [T]
    local_idx: torch.Tensor | None = None  # [T]
    dense_mask: torch.Tensor | None = None  # [N, 1, Lq, Lc + Lq] bool
    # [N, Lc + Lq] int64 flat slot ids of the padded keys; the chunk's own columns hold 0,
    # overwritten by its new keys after the gather
    key_slots: torch.Tensor | None = None
    groups: list[tuple[torch.Tensor | None, AttentionPlan]] | None = None  # attention_groups

    @property
    def num_chunks(self) -> int:
        return self.cu_seqlens.numel() - 1


def visibility_mask(plan: AttentionPlan, block_size: int) -> None:
    """Fill the reference-only fields of plan: padding indices, the dense mask, key slots."""
    device = plan.cu_seqlens.device
    n, lq, lc = plan.num_chunks, plan.max_chunk_len, plan.max_context_len
    starts = plan.cu_seqlens[:-1].long()
    lens = plan.cu_seqlens.diff().long()
    # output_size: without it repeat_interleave reads the lengths back to the host (a sync)
    seq_idx = torch.repeat_interleave(torch.arange(n, device=device), lens,
                                      output_size=plan.causal_limit.numel())
    local = torch.arange(seq_idx.numel(), device=device) - starts[seq_idx]

    # Per padded query row: its limits (padded rows see key 0 so softmax stays finite).
    limit = torch.zeros(n, lq, dtype=torch.long, device=device)
    lo = torch.zeros_like(limit)
    hi = torch.zeros_like(limit)
    limit[seq_idx, local] = plan.causal_limit.long()
    lo[seq_idx, local] = plan.block_lo.long()
    hi[seq_idx, local] = plan.block_hi.long()
    k = torch.arange(lq, device=device)
    inside = (k[None, None, :] <= limit[:, :, None]) | (
        (lo[:, :, None] <= k[None, None, :]) & (k[None, None, :] < hi[:, :, None]))
    inside &= k[None, None, :] < lens[:, None, None]
    ctx = plan.context_lens.long()
    cached = torch.arange(lc, device=device)[None, None, :] < ctx[:, None, None]
    if plan.window is not None:
        pos = torch.zeros_like(limit)
        pos[seq_idx, local] = plan.positions.long()
        floor = pos[:, :, None] - plan.window  # [N, Lq, 1]: keys must be above it
        inside &= pos[:, None, :] > floor
        cached = cached & (torch.arange(lc, device=device)[None, None, :] > floor)
    is_real = torch.arange(lq, device=device)[None, :] < lens[:, None]
    inside[:, :, 0] |= ~is_real
    mask = torch.cat([cached.expand(n, lq, lc), inside], dim=2)

    plan.seq_idx, plan.local_idx, plan.dense_mask = seq_idx, local, mask[:, None]
    if lc:
        j = torch.arange(lc, device=device)
        blocks = plan.block_tables.long().gather(1, (j // block_size)[None].expand(n, lc))
        slots = blocks.clamp(min=0) * block_size + (j % block_size)[None]
        slots = torch.where(j[None] < ctx[:, None], slots, 0)
        plan.key_slots = torch.cat([slots, slots.new_zeros(n, lq)], dim=1)


def attention_reference(
    q: torch.Tensor,  # [T, H, D]
    k: torch.Tensor,  # [T, KVH, D] the chunk's new keys (already rotated)
    v: torch.Tensor,  # [T, KVH, D]
    k_cache: torch.Tensor | None,  # [num_blocks, block_size, KVH, D]
    v_cache: torch.Tensor | None,
    plan: AttentionPlan,
    scale: float,
) -> torch.Tensor:  # [T, H, D]
    if plan.groups is None:  # built once per forward, shared by every layer
        plan.groups = split_groups(plan)
    if plan.groups[0][0] is None:
        return _padded_attention(q, k, v, k_cache, v_cache, plan, scale)
    out = q.new_empty(q.shape)
    for rows, sub in plan.groups:
        out[rows] = _padded_attention(q[rows], k[rows], v[rows], k_cache, v_cache, sub, scale)
    return out


def _padded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      k_cache: torch.Tensor | None, v_cache: torch.Tensor | None,
                      plan: AttentionPlan, scale: float) -> torch.Tensor:
    """Every chunk of plan padded to the longest one (queries) and the longest context."""
    block_size = k_cache.shape[1] if k_cache is not None else 1
    if plan.dense_mask is None:
        visibility_mask(plan, block_size)
    n, lq = plan.num_chunks, plan.max_chunk_len
    h, d = q.shape[1:]
    kvh = k.shape[1]
    idx = (plan.seq_idx, plan.local_idx)
    if q.shape[0] == n * lq:  # every chunk full length (one chunk, or all decodes): views
        qp, kp, vp = (x.reshape(n, lq, x.shape[1], d) for x in (q, k, v))
    else:
        qp = q.new_zeros(n, lq, h, d)
        kp = k.new_zeros(n, lq, kvh, d)
        vp = v.new_zeros(n, lq, kvh, d)
        qp[idx], kp[idx], vp[idx] = q, k, v
    if plan.max_context_len:
        kp = _cached_and_new(k_cache, kp, plan.key_slots)
        vp = _cached_and_new(v_cache, vp, plan.key_slots)
    if lq == 1:
        # One query per chunk: a KV head's query heads become its query rows, so SDPA needs
        # no GQA expansion of the keys (650 vs 830 us at 64 x 150 keys, tiny shapes).
        qh = q.reshape(n, kvh, h // kvh, d)
        out = F.scaled_dot_product_attention(qh, kp.transpose(1, 2), vp.transpose(1, 2),
                                             attn_mask=plan.dense_mask, scale=scale)
        return out.reshape(n, h, d)
    # SDPA accumulates in fp32 internally for half inputs on CPU and CUDA.
    out = F.scaled_dot_product_attention(
        qp.transpose(1, 2), kp.transpose(1, 2), vp.transpose(1, 2),
        attn_mask=plan.dense_mask, scale=scale, enable_gqa=kvh != h)
    out = out.transpose(1, 2)  # [N, Lq, H, D]
    return out[0] if n == 1 else out[idx]  # [T, H, D]


def _cached_and_new(cache: torch.Tensor, new: torch.Tensor,
                    slots: torch.Tensor) -> torch.Tensor:  # [N, Lc + Lq, KVH, D]
    """The cached keys (or values) of every chunk followed by its new ones: one gather
    straight into the result, then the new ones written over their placeholder columns
    (a gather then a cat copied every cached key twice)."""
    n, lq, kvh, d = new.shape
    flat = cache.view(-1, kvh, d)
    if flat.dtype != new.dtype:
        return torch.cat([flat[slots[:, :-lq]].to(new.dtype), new], dim=1)
    out = flat.index_select(0, slots.view(-1)).view(n, -1, kvh, d)
    out[:, -lq:] = new
    return out
