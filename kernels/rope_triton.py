"""Rotary position embedding with explicit per-token positions (rotate-half layout).

A program rotates BLOCK_T tokens times all their query heads, then their key heads, as
[BLOCK_T, heads, D/2] tiles. The inverse frequencies come from the reference
(rope_ref.rope_inv_freq, cached per shape), so the angle pos * inv_freq is the same fp32
product the reference takes; cos/sin run in fp32 in the kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import buffers
from kernels.rope_ref import rope_inv_freq

_INV_FREQ: dict[tuple[int, float, torch.device], torch.Tensor] = {}
TILE_ELEMENTS = 2048  # tokens per program = this / (heads * D/2); 4096 spilled at 4 warps


@triton.jit
def _rotate(out_ptr, x_ptr, stride_xt, stride_xh, stride_ot, stride_oh, offs_t, t_ok, heads,
            cos, sin, half, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    offs_h = tl.arange(0, BLOCK_H)[None, :, None]
    offs_j = tl.arange(0, BLOCK_HALF)[None, None, :]
    tok = offs_t[:, None, None]
    ok = t_ok[:, None, None] & (offs_h < heads) & (offs_j < half)
    src = x_ptr + tok * stride_xt + offs_h * stride_xh + offs_j
    x1 = tl.load(src, mask=ok, other=0.0)  # [BLOCK_T, BLOCK_H, BLOCK_HALF] first halves
    x2 = tl.load(src + half, mask=ok, other=0.0)
    a, b = x1.to(tl.float32), x2.to(tl.float32)
    dst = out_ptr + tok * stride_ot + offs_h * stride_oh + offs_j
    tl.store(dst, (a * cos - b * sin).to(x1.dtype), mask=ok)
    tl.store(dst + half, (b * cos + a * sin).to(x1.dtype), mask=ok)


@triton.jit
def _rope_kernel(
    q_out, k_out, q_ptr, k_ptr, pos_ptr, inv_freq_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh,
    stride_qot, stride_qoh, stride_kot, stride_koh,
    num_tokens, num_heads, num_kv_heads, half,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_KVH: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_ok = offs_t < num_tokens
    offs_j = tl.arange(0, BLOCK_HALF)
    inv_freq = tl.load(inv_freq_ptr + offs_j, mask=offs_j < half, other=0.0)
    pos = tl.load(pos_ptr + offs_t, mask=t_ok, other=0).to(tl.float32)
    angle = pos[:, None] * inv_freq[None, :]  # [BLOCK_T, BLOCK_HALF] fp32, as the reference
    cos = tl.cos(angle)[:, None, :]
    sin = tl.sin(angle)[:, None, :]
    _rotate(q_out, q_ptr, stride_qt, stride_qh, stride_qot, stride_qoh, offs_t, t_ok,
            num_heads, cos, sin, half, BLOCK_H, BLOCK_HALF)
    _rotate(k_out, k_ptr, stride_kt, stride_kh, stride_kot, stride_koh, offs_t, t_ok,
            num_kv_heads, cos, sin, half, BLOCK_KVH, BLOCK_HALF)


def rope_triton(
    q: torch.Tensor,  # [T, H, D]
    k: torch.Tensor,  # [T, KVH, D]
    positions: torch.Tensor,  # [T] int
    theta: float,
    inv_freq: torch.Tensor | None = None,  # [D/2] fp32 scaled frequencies; None = from theta
) -> tuple[torch.Tensor, torch.Tensor]:
    t, h, d = q.shape
    if k.dim() != 3 or k.shape[0] != t or k.shape[2] != d or positions.shape != (t,):
        raise ValueError(f"rope: q {tuple(q.shape)}, k {tuple(k.shape)}, positions "
                         f"{tuple(positions.shape)} do not agree")
    if d % 2:
        raise ValueError(f"rope: head_dim must be even, got {d}")
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    if inv_freq is None:
        key = (d, float(theta), q.device)
        if key not in _INV_FREQ:
            _INV_FREQ[key] = rope_inv_freq(d, theta, q.device).contiguous()
        inv_freq = _INV_FREQ[key]
    elif inv_freq.shape != (d // 2,) or inv_freq.dtype != torch.float32:
        raise ValueError(f"rope: inv_freq must be [{d // 2}] float32, got "
                         f"{tuple(inv_freq.shape)} {inv_freq.dtype}")
    q_out = buffers.empty(tuple(q.shape), q.dtype, q.device)
    k_out = buffers.empty(tuple(k.shape), k.dtype, k.device)
    if t:
        block_h, block_half = triton.next_power_of_2(h), triton.next_power_of_2(d // 2)
        block_t = max(1, min(triton.next_power_of_2(t), TILE_ELEMENTS // (block_h * block_half)))
        _rope_kernel[(triton.cdiv(t, block_t),)](
            q_out, k_out, q, k, positions, inv_freq.contiguous(),
            q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1),
            t, h, k.shape[1], d // 2,
            BLOCK_T=block_t, BLOCK_H=block_h, BLOCK_KVH=triton.next_power_of_2(k.shape[1]),
            BLOCK_HALF=block_half, num_warps=4)
    return q_out, k_out
