"""RMSNorm fused with the residual add: BLOCK_R rows per program, each row in one tile.

Rounds exactly where the reference rounds (kernels/norm_ref.py): x + residual in the input
dtype, statistics in fp32, the normalized row cast to the input dtype before the weight.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import buffers

TILE_ELEMENTS = 4096  # rows per program = this / D (at least one row)


@triton.jit
def _rmsnorm_kernel(
    out_ptr, sum_ptr, x_ptr, res_ptr, w_ptr,
    stride_out, stride_sum, stride_x, stride_res,
    rows, dim, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    offs_r = (tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R))[:, None]
    offs_d = tl.arange(0, BLOCK_D)[None, :]
    ok = (offs_r < rows) & (offs_d < dim)  # [BLOCK_R, BLOCK_D]
    x = tl.load(x_ptr + offs_r * stride_x + offs_d, mask=ok, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + offs_r * stride_res + offs_d, mask=ok, other=0.0)
        # The sum of two halves is exact in fp32; one rounding, as torch's half add does.
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(sum_ptr + offs_r * stride_sum + offs_d, x, mask=ok)
    # Statistics in fp32: half-precision sums of squares overflow at D in the thousands.
    h = x.to(tl.float32)
    inv_rms = tl.math.rsqrt(tl.sum(h * h, axis=1) / dim + eps)  # [BLOCK_R]
    normed = (h * inv_rms[:, None]).to(x.dtype)
    w = tl.load(w_ptr + offs_d, mask=offs_d < dim, other=0.0)
    out = w.to(tl.float32) * normed.to(tl.float32)
    tl.store(out_ptr + offs_r * stride_out + offs_d, out.to(out_ptr.dtype.element_ty), mask=ok)


def rmsnorm_triton(
    x: torch.Tensor,  # [T, D]
    weight: torch.Tensor,  # [D]
    eps: float,
    residual: torch.Tensor | None = None,  # [T, D]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (rmsnorm(x + residual) * weight, x + residual), as norm_ref does."""
    if x.dim() != 2 or weight.shape != (x.shape[1],):
        raise ValueError(f"rmsnorm: x {tuple(x.shape)} must be [T, D], weight [D], "
                         f"got weight {tuple(weight.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"rmsnorm: residual {tuple(residual.shape)} != x {tuple(x.shape)}")
    x = x if x.stride(-1) == 1 else x.contiguous()
    res = residual if residual is None or residual.stride(-1) == 1 else residual.contiguous()
    rows, dim = x.shape
    out = buffers.empty((rows, dim), torch.result_type(weight, x), x.device)
    summed = buffers.empty((rows, dim), x.dtype, x.device) if res is not None else x
    if rows:
        block_d = triton.next_power_of_2(dim)
        block_r = max(1, min(triton.next_power_of_2(rows), TILE_ELEMENTS // block_d))
        _rmsnorm_kernel[(triton.cdiv(rows, block_r),)](
            out, summed, x, res if res is not None else x, weight.contiguous(),
            out.stride(0), summed.stride(0), x.stride(0), res.stride(0) if res is not None else 0,
            rows, dim, eps, HAS_RESIDUAL=res is not None, BLOCK_R=block_r, BLOCK_D=block_d,
            num_warps=min(16, max(4, block_r * block_d // 512)))
    return out, summed
