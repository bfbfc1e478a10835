"""How the reference (the CPU path) cuts a batch into groups padded separately: one-token
chunks apart from longer ones, and the one-token chunks by context length, so that the KV
gather and SDPA of a decode batch follow its real context lengths instead of padding every
request to the longest one. Built once per forward, shared by every layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from kernels.host_reads import can_read_back

if TYPE_CHECKING:
    from kernels.attention_ref import AttentionPlan

# A group's fixed cost (one more gather, SDPA call and scatter per layer, one more mask per
# forward) in padded key rows (one request x one cached position) it must save to be worth
# cutting. Chosen with bench/attention_groups.py (see BENCHMARKS "Serving > eleventh session").
GROUP_COST_KEY_ROWS = 4096
MAX_DECODE_GROUPS = 4


def context_cuts(contexts_desc: list[int], group_cost: int = GROUP_COST_KEY_ROWS,
                 max_groups: int = MAX_DECODE_GROUPS) -> list[int]:
    """Where groups start in a list of context lengths sorted longest first (always 0 first).

    Greedy from the longest: request i starts a new group when padding it and every shorter
    request to the current group's longest costs more key rows than a group does, i.e.
    (top - contexts[i]) * (number from i to the end) > group_cost."""
    cuts = [0]
    n = len(contexts_desc)
    top = contexts_desc[0] if n else 0
    for i, ctx in enumerate(contexts_desc):
        if len(cuts) == max_groups:
            break
        if (top - ctx) * (n - i) > group_cost:
            cuts.append(i)
            top = ctx
    return cuts


def split_groups(plan: AttentionPlan, group_cost: int | None = None
                 ) -> list[tuple[torch.Tensor | None, AttentionPlan]]:
    """[(token rows, sub-plan)]. One group with rows None when nothing is worth cutting,
    and always off the CPU: each cut is a host decision on device values, a sync per forward
    on a GPU (where the reference runs only for sliding windows or when forced).
    group_cost: GROUP_COST_KEY_ROWS when None."""
    if not can_read_back(plan.cu_seqlens):
        return [(None, plan)]
    lens = plan.cu_seqlens.diff().long()
    single = lens == 1
    chunk_sets = []
    if bool(single.any()):
        chunks = single.nonzero().squeeze(1)
        ctx = plan.context_lens[chunks]
        order = torch.sort(ctx, descending=True, stable=True).indices
        chunks = chunks[order]
        cost = GROUP_COST_KEY_ROWS if group_cost is None else group_cost
        cuts = context_cuts(ctx[order].tolist(), cost) + [chunks.numel()]
        chunk_sets += [chunks[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    if not bool(single.all()):
        chunk_sets.append((~single).nonzero().squeeze(1))
    if len(chunk_sets) == 1:
        return [(None, plan)]
    seq_idx = torch.repeat_interleave(torch.arange(lens.numel(), device=lens.device), lens)
    starts = plan.cu_seqlens[:-1].long()
    return [_sub_plan(plan, chunks, lens, starts, seq_idx) for chunks in chunk_sets]


def _sub_plan(plan: AttentionPlan, chunks: torch.Tensor, lens: torch.Tensor,
              starts: torch.Tensor, seq_idx: torch.Tensor
              ) -> tuple[torch.Tensor, AttentionPlan]:
    """The plan of the chosen chunks (in the given order) and their token rows."""
    # Local: attention_ref imports split_groups from here at its top; either import at the
    # top of both modules fails (a cycle), whichever is imported first.
    from kernels.attention_ref import AttentionPlan

    sub_lens = lens[chunks]
    if bool((sub_lens == 1).all()):
        rows = starts[chunks]
    else:
        chosen = torch.zeros_like(lens, dtype=torch.bool)
        chosen[chunks] = True
        rows = chosen[seq_idx].nonzero().squeeze(1)  # chunks in batch order here
    ctx = plan.context_lens[chunks]
    cu = torch.zeros(chunks.numel() + 1, dtype=plan.cu_seqlens.dtype, device=lens.device)
    cu[1:] = sub_lens.cumsum(0)
    return rows, AttentionPlan(
        cu, plan.causal_limit[rows], plan.block_lo[rows], plan.block_hi[rows], ctx,
        plan.block_tables[chunks], int(sub_lens.max()), int(ctx.max()), plan.window,
        None if plan.positions is None else plan.positions[rows])
