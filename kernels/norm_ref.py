"""RMSNorm fused with the residual add: the plain-torch reference and CPU path."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rmsnorm_reference(
    x: torch.Tensor,  # [T, D]
    weight: torch.Tensor,  # [D]
    eps: float,
    residual: torch.Tensor | None = None,  # [T, D]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (rmsnorm(x + residual) * weight, x + residual)."""
    if residual is not None:
        x = x + residual
    # Statistics in fp32: half-precision sums of squares overflow at D in the thousands.
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return weight * normed.to(x.dtype), x
