"""A ragged batch of token chunks and who sees whom: the one input form of every forward.

For query token q of a chunk (indices relative to the chunk start):
  - it sees every cached KV entry of its request (context_lens[r] of them), and
  - inside the chunk it sees key k when k <= causal_limit[q] or block_lo[q] <= k < block_hi[q].
AR / verify: causal_limit[q] = q, empty block. Draft / diffusion: causal_limit = -1 and one
block over the chunk. The quadratic layout mixes both (see engine/modes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Chunk:
    """One request's chunk, in plain Python lists (what the engine plans)."""

    tokens: Sequence[int]
    positions: Sequence[int]
    causal_limit: Sequence[int]
    block_lo: Sequence[int]
    block_hi: Sequence[int]
    context_len: int = 0  # cached tokens of the request this chunk attends to
    block_table: Sequence[int] = ()  # cache block ids holding those tokens

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if n == 0:
            raise ValueError("a chunk needs at least one token")
        for name in ("positions", "causal_limit", "block_lo", "block_hi"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Chunk.{name} has {len(getattr(self, name))} entries, "
                                 f"tokens has {n}")

    @staticmethod
    def causal(tokens: Sequence[int], start: int = 0, context_len: int = 0,
               block_table: Sequence[int] = ()) -> Chunk:
        """AR prefill / decode / verify: each token sees the cache and the chunk up to itself."""
        n = len(tokens)
        return Chunk(tokens, range(start, start + n), range(n), [0] * n, [0] * n,
                     context_len, block_table)

    @staticmethod
    def bidirectional(tokens: Sequence[int], start: int, context_len: int = 0,
                      block_table: Sequence[int] = ()) -> Chunk:
        """Draft / denoise: the whole chunk is one block, the cache is read, nothing causal."""
        n = len(tokens)
        return Chunk(tokens, range(start, start + n), [-1] * n, [0] * n, [n] * n,
                     context_len, block_table)


@dataclass
class ChunkBatch:
    """Flat tensors for a batch of chunks: T tokens in N chunks."""

    tokens: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    cu_seqlens: torch.Tensor  # [N+1] int32, chunk starts
    causal_limit: torch.Tensor  # [T] int32, chunk-relative
    block_lo: torch.Tensor  # [T] int32
    block_hi: torch.Tensor  # [T] int32
    context_lens: torch.Tensor  # [N] int32, cached tokens per request
    block_tables: torch.Tensor  # [N, max_blocks] int32 (-1 = none)
    max_chunk_len: int
    max_context_len: int

    @property
    def num_chunks(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def num_tokens(self) -> int:
        return self.tokens.numel()

    def to(self, device: torch.device | str) -> ChunkBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        return ChunkBatch(**moved)

    @staticmethod
    def from_chunks(chunks: Sequence[Chunk], device: torch.device | str = "cpu") -> ChunkBatch:
        if not chunks:
            raise ValueError("a batch needs at least one chunk")
        lens = [len(c.tokens) for c in chunks]
        cu = [0]
        for n in lens:
            cu.append(cu[-1] + n)
        max_blocks = max(1, max(len(c.block_table) for c in chunks))
        tables = [list(c.block_table) + [-1] * (max_blocks - len(c.block_table)) for c in chunks]

        def flat(name: str) -> list[int]:
            return [x for c in chunks for x in getattr(c, name)]

        i32 = dict(dtype=torch.int32, device=device)
        return ChunkBatch(
            tokens=torch.tensor(flat("tokens"), dtype=torch.int64, device=device),
            positions=torch.tensor(flat("positions"), dtype=torch.int64, device=device),
            cu_seqlens=torch.tensor(cu, **i32),
            causal_limit=torch.tensor(flat("causal_limit"), **i32),
            block_lo=torch.tensor(flat("block_lo"), **i32),
            block_hi=torch.tensor(flat("block_hi"), **i32),
            context_lens=torch.tensor([c.context_len for c in chunks], **i32),
            block_tables=torch.tensor(tables, **i32),
            max_chunk_len=max(lens),
            max_context_len=max(c.context_len for c in chunks),
        )
