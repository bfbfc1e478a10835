"""Speculative acceptance: per request, the length of the draft prefix equal to the
verifier's tokens (kernels/accept_ref.py). One program per request."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import buffers


@triton.jit
def _accept_kernel(out_ptr, draft_ptr, target_ptr, num_draft_ptr,
                   stride_d, stride_t, width, BLOCK_B: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_B)
    ok = cols < width
    draft = tl.load(draft_ptr + row * stride_d + cols, mask=ok, other=0)
    target = tl.load(target_ptr + row * stride_t + cols, mask=ok, other=0)
    n = tl.load(num_draft_ptr + row)
    match = (draft == target) & (cols < n) & ok
    # The accepted prefix ends at the first column that is not a match (or at width).
    first_miss = tl.min(tl.where(match | ~ok, width, cols), axis=0)
    tl.store(out_ptr + row, first_miss.to(tl.int64))


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
        _accept_kernel[(n,)](out, draft, target, num_draft, draft.stride(0), target.stride(0),
                             width, BLOCK_B=max(2, triton.next_power_of_2(width)), num_warps=1)
    return out
