"""RMSNorm (+ residual) and RoPE: Triton against the references, odd shapes, each dtype."""

from __future__ import annotations

import pytest
import torch

from kernels.norm_ref import rmsnorm_reference
from kernels.norm_triton import rmsnorm_triton
from kernels.rope_ref import rope_reference
from kernels.rope_triton import rope_triton
from tests.kernels.plans import randn

DTYPES = [torch.float32, torch.float16]
TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
# bfloat16 is wrong in Triton's interpreter: tested on CUDA only.
CUDA_ONLY_BF16 = [torch.bfloat16] if torch.cuda.is_available() else []


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,dim", [(1, 32), (3, 48), (17, 256), (130, 20)])
@pytest.mark.parametrize("with_residual", [True, False])
def test_rmsnorm(rows: int, dim: int, with_residual: bool, dtype: torch.dtype, device: str,
                 gen: torch.Generator) -> None:
    x = randn((rows, dim), dtype, device, gen) * 3
    w = randn((dim,), dtype, device, gen)
    r = randn((rows, dim), dtype, device, gen) if with_residual else None
    out, summed = rmsnorm_triton(x, w, 1e-5, r)
    ref_out, ref_sum = rmsnorm_reference(x, w, 1e-5, r)
    assert out.dtype == ref_out.dtype and summed.dtype == ref_sum.dtype
    torch.testing.assert_close(summed, ref_sum, atol=0, rtol=0)  # the add rounds identically
    torch.testing.assert_close(out, ref_out, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", CUDA_ONLY_BF16)
def test_bfloat16(dtype: torch.dtype, device: str, gen: torch.Generator) -> None:
    x, r = (randn((17, 256), dtype, device, gen) for _ in range(2))
    w = randn((256,), dtype, device, gen)
    torch.testing.assert_close(rmsnorm_triton(x, w, 1e-5, r), rmsnorm_reference(x, w, 1e-5, r),
                               atol=TOL[dtype], rtol=TOL[dtype])
    q, k = randn((17, 8, 32), dtype, device, gen), randn((17, 4, 32), dtype, device, gen)
    positions = torch.randint(0, 4000, (17,), generator=gen).to(device)
    torch.testing.assert_close(rope_triton(q, k, positions, 1e4),
                               rope_reference(q, k, positions, 1e4), atol=TOL[dtype],
                               rtol=TOL[dtype])


def test_rmsnorm_strided_rows(device: str, gen: torch.Generator) -> None:
    """A row-strided view (a slice of a wider activation) reads and writes correctly."""
    wide = randn((5, 64), torch.float32, device, gen)
    x = wide[:, :40]
    w = randn((40,), torch.float32, device, gen)
    out, _ = rmsnorm_triton(x, w, 1e-6)
    torch.testing.assert_close(out, rmsnorm_reference(x, w, 1e-6)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 3, 17, 130])
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(8, 4, 32), (6, 2, 24)])
def test_rope(tokens: int, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
              device: str, gen: torch.Generator) -> None:
    q = randn((tokens, heads, head_dim), dtype, device, gen)
    k = randn((tokens, kv_heads, head_dim), dtype, device, gen)
    # Explicit, unsorted positions, as the quadratic layout passes them.
    positions = torch.randint(0, 4000, (tokens,), generator=gen).to(device)
    for theta in (10000.0, 1e6):
        q_out, k_out = rope_triton(q, k, positions, theta)
        q_ref, k_ref = rope_reference(q, k, positions, theta)
        torch.testing.assert_close(q_out, q_ref, atol=TOL[dtype], rtol=TOL[dtype])
        torch.testing.assert_close(k_out, k_ref, atol=TOL[dtype], rtol=TOL[dtype])


def test_rope_rejects_odd_head_dim(device: str) -> None:
    q = torch.randn(2, 2, 5, device=device)
    with pytest.raises(ValueError, match="even"):
        rope_triton(q, q, torch.arange(2, device=device), 1e4)
