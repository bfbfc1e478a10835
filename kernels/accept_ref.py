"""Speculative acceptance: per request, the length of the draft prefix that equals the
verifier's tokens. The plain-torch reference and CPU path."""

from __future__ import annotations

import torch


def accept_reference(
    draft: torch.Tensor,  # [N, B] int64, drafted tokens
    target: torch.Tensor,  # [N, B] int64, the verifier's token at the same positions
    num_draft: torch.Tensor,  # [N] int, how many of the B columns are real drafts
) -> torch.Tensor:  # [N] int64
    cols = torch.arange(draft.shape[1], device=draft.device)
    match = (draft == target) & (cols[None] < num_draft[:, None])
    # The accepted prefix ends at the first mismatch: cumprod turns later matches off.
    return match.long().cumprod(dim=1).sum(dim=1)
