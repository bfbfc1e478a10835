"""Random inputs for the kernel tests: chunk layouts of every mode, paged caches with holes.

Values are random normal, never zeros; cache blocks no request uses hold NaN so that a
kernel reading outside a request's context fails the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kernels import dispatch
from kernels.attention_ref import AttentionPlan
from kernels.random_batch import Layout, random_block_tables
from kernels.random_batch import bidirectional as bidirectional  # layouts of every mode here
from kernels.random_batch import causal as causal
from models.batch import Chunk, ChunkBatch


def quadratic(b: int) -> Layout:
    """[d_0 .. d_{b-1} | b masks after d_0 | ... ]: drafts causal, sub-block i sees d_0..d_i."""
    limit, lo, hi = list(range(b)), [0] * b, [0] * b
    for i in range(b):
        start = b + i * b
        limit += [i] * b
        lo += [start] * b
        hi += [start + b] * b
    return limit, lo, hi


def scattered(n: int, gen: torch.Generator) -> Layout:
    """Blocks not aligned to anything, some reaching the chunk end; every row sees key 0."""
    limit = torch.randint(0, n, (n,), generator=gen).tolist()
    lo = torch.randint(0, n, (n,), generator=gen).tolist()
    width = torch.randint(0, n + 1, (n,), generator=gen).tolist()
    hi = [min(n, a + w) for a, w in zip(lo, width, strict=True)]
    return limit, lo, hi


def make_batch(layouts: Sequence[Layout], contexts: Sequence[int], page: int, num_blocks: int,
               gen: torch.Generator, extra_cols: int = 2) -> tuple[ChunkBatch, list[list[int]]]:
    """Chunks with the given visibility and context lengths over random_block_tables (extra
    -1 holes past the longest); also each chunk's own blocks."""
    padded = random_block_tables(contexts, page, num_blocks, gen, extra_cols)
    tables = [row[:-(-ctx // page)].tolist() for row, ctx in zip(padded, contexts, strict=True)]
    chunks = [Chunk([5] * len(limit), list(range(ctx, ctx + len(limit))), limit, lo, hi, ctx,
                    table)
              for (limit, lo, hi), ctx, table in zip(layouts, contexts, tables, strict=True)]
    batch = ChunkBatch.from_chunks(chunks)
    batch.block_tables = padded  # the chunks' tables, then the extra holes
    return batch, tables


def plan_of(batch: ChunkBatch, device: str | torch.device,
            window: int | None = None) -> AttentionPlan:
    """window: a sliding window over the chunks' positions; None = full attention."""
    b = batch.to(device)
    return dispatch.prepare_attention(b.cu_seqlens, b.causal_limit, b.block_lo, b.block_hi,
                                      b.context_lens, b.block_tables, b.max_chunk_len,
                                      b.max_context_len, window,
                                      None if window is None else b.positions)


def make_cache(num_blocks: int, page: int, kvh: int, d: int, tables: Sequence[Sequence[int]],
               dtype: torch.dtype, device: str | torch.device, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """k, v caches: random in block 0 and in the blocks of `tables`, NaN elsewhere."""
    shape = (num_blocks, page, kvh, d)
    k = torch.full(shape, float("nan"))
    v = torch.full(shape, float("nan"))
    used = [0] + [b for t in tables for b in t]
    k[used] = torch.randn((len(used), page, kvh, d), generator=gen)
    v[used] = torch.randn((len(used), page, kvh, d), generator=gen)
    return k.to(device, dtype), v.to(device, dtype)


def randn(shape: Sequence[int], dtype: torch.dtype, device: str | torch.device,
          gen: torch.Generator) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=gen).to(device, dtype)


def make_inputs(layouts: Sequence[Layout], contexts: Sequence[int], page: int, num_blocks: int,
                heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                device: str | torch.device, gen: torch.Generator
                ) -> tuple[ChunkBatch, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                           torch.Tensor]:
    """(batch, q, k, v, k_cache, v_cache) of one attention call: make_batch, make_cache, then
    q, k and v, drawn from gen in that order."""
    batch, tables = make_batch(layouts, contexts, page, num_blocks, gen)
    k_cache, v_cache = make_cache(num_blocks, page, kv_heads, head_dim, tables, dtype, device,
                                  gen)
    t = batch.num_tokens
    q = randn((t, heads, head_dim), dtype, device, gen)
    k = randn((t, kv_heads, head_dim), dtype, device, gen)
    v = randn((t, kv_heads, head_dim), dtype, device, gen)
    return batch, q, k, v, k_cache, v_cache
