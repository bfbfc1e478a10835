"""Rotary position embedding with explicit per-token positions (Llama/Mistral rotate-half
layout): the plain-torch reference and CPU path."""

from __future__ import annotations

import torch


def rope_inv_freq(head_dim: int, theta: float, device: torch.device | str) -> torch.Tensor:
    """[head_dim // 2] fp32 inverse frequencies, as transformers computes them."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device)
    return 1.0 / (theta ** (exponent.float() / head_dim))


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float,
                 inv_freq: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: [T, head_dim] in fp32, computed as transformers does for bitwise parity."""
    if inv_freq is None:
        inv_freq = rope_inv_freq(head_dim, theta, positions.device)
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos[:, None] + rotated.float() * sin[:, None]).to(x.dtype)


_last: tuple | None = None


def _cached_cos_sin(positions: torch.Tensor, head_dim: int, theta: float,
                    inv_freq: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer of one forward passes the same positions tensor: compute cos/sin once."""
    global _last
    if (_last is None or _last[0] is not positions or _last[1:3] != (head_dim, theta)
            or _last[3] is not inv_freq):
        cos, sin = rope_cos_sin(positions, head_dim, theta, inv_freq)
        _last = (positions, head_dim, theta, inv_freq, cos, sin)
    return _last[4], _last[5]


def rope_reference(
    q: torch.Tensor,  # [T, H, D]
    k: torch.Tensor,  # [T, KVH, D]
    positions: torch.Tensor,  # [T] int
    theta: float,
    inv_freq: torch.Tensor | None = None,  # [D/2] fp32 scaled frequencies; None = from theta
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = _cached_cos_sin(positions, q.shape[-1], theta, inv_freq)
    # One rotation over q and k side by side: half the ops of two (CPU decode is op-bound).
    both = _rotate(torch.cat([q, k], dim=1), cos, sin)
    return both[:, : q.shape[1]], both[:, q.shape[1]:]
