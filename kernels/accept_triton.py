"""Speculative acceptance: per request, the length of the draft prefix equal to the
verifier's tokens (kernels/accept_ref.py). BLOCK_N requests per program."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import buffers


@triton.jit
def _accept_kernel(out_ptr, draft_ptr, target_ptr, num_draft_ptr, stride_d, stride_t,
                   rows, width, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    offs_n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < rows
    cols = tl.arange(0, BLOCK_B)[None, :]
    ok = n_ok[:, None] & (cols < width)  # [BLOCK_N, BLOCK_B]
    draft = tl.load(draft_ptr + offs_n[:, None] * stride_d + cols, mask=ok, other=0)
    target = tl.load(target_ptr + offs_n[:, None] * stride_t + cols, mask=ok, other=0)
    num = tl.load(num_draft_ptr + offs_n, mask=n_ok, other=0)
    match = (draft == target) & (cols < num[:, None])
    # The accepted prefix ends at the first column that is not a match (or at width).
    first_miss = tl.min(tl.where(match | (cols >= width), width, cols), axis=1)
    tl.store(out_ptr + offs_n, first_miss.to(tl.int64), mask=n_ok)


def accept_triton(
    draft: torch.Tensor,  # [N, B] int, drafted tokens
    target: torch.Tensor,  # [N, B] int, the verifier's tokens at the same positions
    num_draft: torch.Tensor,  # [N] int, how many of the B columns are real drafts
) -> torch.Tensor:  # [N] int64
    if draft.dim() != 2 or target.shape != draft.shape or num_draft.shape != draft.shape[:1]:
        raise ValueError(f"accept: draft {tuple(draft.shape)}, target {tuple(target.shape)}, "
                         f"num_draft {tuple(num_draft.shape)} do not agree")
    n, width = draft.shape
    draft = draft if draft.stride(-1) == 1 else draft.contiguous()
    target = target if target.stride(-1) == 1 else target.contiguous()
    out = buffers.empty((n,), torch.int64, draft.device)
    if n:
        block_b = max(2, triton.next_power_of_2(width))
        block_n = max(1, min(triton.next_power_of_2(n), 1024 // block_b))
        _accept_kernel[(triton.cdiv(n, block_n),)](
            out, draft, target, num_draft, draft.stride(0), target.stride(0), n, width,
            BLOCK_N=block_n, BLOCK_B=block_b, num_warps=4)
    return out
