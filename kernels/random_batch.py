"""Random paged attention batches for the kernel tests and benchmarks (tests/kernels/plans.py,
bench/kernel_cases.py, bench/attention_groups.py); the engine never builds one.

A layout is one chunk's visibility, per token: (causal_limit, block_lo, block_hi), the
rule of models/batch.py. Here so that bench/ and tests/ share one builder: kernels is the
lowest package both may import.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kernels import dispatch
from kernels.attention_ref import AttentionPlan

Layout = tuple[list[int], list[int], list[int]]


def causal(n: int) -> Layout:
    """AR prefill / decode / verify: causal_limit = q, no block."""
    return list(range(n)), [0] * n, [0] * n


def bidirectional(n: int) -> Layout:
    """Diffusion / draft: nothing causal, one block over the whole chunk."""
    return [-1] * n, [0] * n, [n] * n


def random_block_tables(contexts: Sequence[int], page: int, num_blocks: int,
                        gen: torch.Generator | None = None, extra_cols: int = 0
                        ) -> torch.Tensor:
    """[N, M] int32 on the CPU: request i holds ceil(contexts[i] / page) distinct random
    blocks, shared with no other request and never block 0 (a -1 hole reads block 0, so tests
    keep it finite and poison the blocks nobody holds); -1 pads every row to the longest (at
    least one column), then extra_cols more. Draws one randperm from gen (None: torch's)."""
    need = [-(-c // page) for c in contexts]
    if sum(need) > num_blocks - 1:
        raise ValueError(f"{sum(need)} blocks needed, {num_blocks - 1} besides block 0")
    perm = torch.randperm(num_blocks - 1, generator=gen).int() + 1
    tables = torch.full((len(contexts), max([1, *need]) + extra_cols), -1, dtype=torch.int32)
    at = 0
    for i, m in enumerate(need):
        tables[i, :m] = perm[at:at + m]
        at += m
    return tables


def paged_plan(layouts: Sequence[Layout], contexts: Sequence[int], page: int, num_blocks: int,
               gen: torch.Generator | None = None, device: str | torch.device = "cpu"
               ) -> AttentionPlan:
    """The attention plan of chunks with these layouts and context lengths over
    random_block_tables (a decode batch: [causal(1)] * N)."""
    lens = [len(limit) for limit, _, _ in layouts]
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    i32 = dict(dtype=torch.int32, device=device)

    def flat(k: int) -> torch.Tensor:
        return torch.tensor([x for layout in layouts for x in layout[k]], **i32)

    tables = random_block_tables(contexts, page, num_blocks, gen).to(device)
    return dispatch.prepare_attention(torch.tensor(cu, **i32), flat(0), flat(1), flat(2),
                                      torch.tensor(list(contexts), **i32), tables, max(lens),
                                      max(contexts))
