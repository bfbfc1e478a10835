"""kernels/random_batch.py: the random paged batches the kernel tests and benchmarks share."""

from __future__ import annotations

import pytest
import torch

from kernels.random_batch import bidirectional, causal, paged_plan, random_block_tables


def test_each_request_holds_its_own_random_blocks_never_block_0_then_holes() -> None:
    tables = random_block_tables([33, 0, 16, 1], 16, 10, torch.Generator().manual_seed(0),
                                 extra_cols=2)
    assert tables.shape == (4, 5) and tables.dtype == torch.int32
    held = [row[row >= 0].tolist() for row in tables]
    assert [len(h) for h in held] == [3, 0, 1, 1]
    assert all(bool((row[len(h):] == -1).all()) for row, h in zip(tables, held, strict=True))
    blocks = [b for h in held for b in h]
    assert len(set(blocks)) == len(blocks) and 0 not in blocks and max(blocks) < 10
    again = random_block_tables([33, 0, 16, 1], 16, 10, torch.Generator().manual_seed(0), 2)
    assert torch.equal(tables, again)
    with pytest.raises(ValueError, match="5 blocks needed, 4 besides block 0"):
        random_block_tables([33, 16, 16], 16, 5)


def test_a_plan_lays_its_chunks_out_as_given() -> None:
    decode = paged_plan([causal(1)] * 3, [5, 40, 17], 16, 8)
    assert decode.cu_seqlens.tolist() == [0, 1, 2, 3]
    assert decode.causal_limit.tolist() == [0, 0, 0] and decode.block_hi.tolist() == [0, 0, 0]
    assert decode.context_lens.tolist() == [5, 40, 17] and decode.block_tables.shape == (3, 3)
    assert (decode.max_chunk_len, decode.max_context_len) == (1, 40)
    mixed = paged_plan([causal(2), bidirectional(3)], [0, 0], 16, 1)
    assert mixed.cu_seqlens.tolist() == [0, 2, 5]
    assert mixed.causal_limit.tolist() == [0, 1, -1, -1, -1]
    assert mixed.block_hi.tolist() == [0, 0, 3, 3, 3]
    assert mixed.block_tables.tolist() == [[-1], [-1]] and mixed.max_chunk_len == 3
