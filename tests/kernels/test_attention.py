"""Paged attention: Triton against the plain-torch reference on every chunk layout."""

from __future__ import annotations

import pytest
import torch

from kernels.attention_ref import _padded_attention, attention_reference
from kernels.attention_triton import attention_triton
from tests.kernels import plans as P

TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
# bfloat16 is wrong in Triton's interpreter: tested on CUDA only.
CUDA_ONLY_BF16 = [torch.bfloat16] if torch.cuda.is_available() else []
NUM_BLOCKS = 80


def _layouts(name: str, gen: torch.Generator) -> tuple[list, list[int]]:
    """(visibility per chunk, context length per chunk) for one named batch."""
    if name == "decode":
        return [P.causal(1)] * 4, [1, 3, 17, 130]
    if name == "prefill":
        return [P.causal(n) for n in (1, 3, 17, 130)], [0, 0, 0, 0]
    if name == "denoise":
        return [P.bidirectional(n) for n in (1, 3, 17)], [130, 17, 3]
    if name == "quadratic":
        return [P.quadratic(3), P.quadratic(2)], [17, 0]
    if name == "scattered":
        return [P.scattered(3, gen), P.scattered(17, gen)], [0, 5]
    assert name == "mixed"
    return ([P.causal(1), P.bidirectional(8), P.quadratic(3), P.causal(17), P.scattered(13, gen)],
            [17, 3, 130, 0, 9])


def _run(layouts: list, contexts: list[int], heads: int, kv_heads: int, head_dim: int,
         dtype: torch.dtype, device: str, gen: torch.Generator, page: int = 5,
         num_splits: int | None = None) -> None:
    batch, q, k, v, k_cache, v_cache = P.make_inputs(layouts, contexts, page, NUM_BLOCKS, heads,
                                                     kv_heads, head_dim, dtype, device, gen)
    scale = head_dim ** -0.5
    out = attention_triton(q, k, v, k_cache, v_cache, P.plan_of(batch, device), scale,
                           num_splits=num_splits)
    ref = attention_reference(q, k, v, k_cache, v_cache, P.plan_of(batch, device), scale)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out.float(), ref.float(), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["decode", "prefill", "denoise", "quadratic", "scattered",
                                    "mixed"])
def test_layouts(layout: str, dtype: torch.dtype, device: str, gen: torch.Generator) -> None:
    layouts, contexts = _layouts(layout, gen)
    _run(layouts, contexts, 8, 4, 32, dtype, device, gen)


@pytest.mark.parametrize("dtype", CUDA_ONLY_BF16)
def test_bfloat16(dtype: torch.dtype, device: str, gen: torch.Generator) -> None:
    layouts, contexts = _layouts("mixed", gen)
    _run(layouts, contexts, 8, 4, 32, dtype, device, gen)


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(6, 2, 24), (4, 4, 16), (32, 8, 128)])
def test_head_groups(heads: int, kv_heads: int, head_dim: int, device: str,
                     gen: torch.Generator) -> None:
    """Groups of 3 (not a power of two), 1 (no GQA), 4 at the 8B head dim; D not a power
    of two."""
    _run([P.causal(1), P.bidirectional(3), P.quadratic(2)], [17, 3, 5], heads, kv_heads,
         head_dim, torch.float16, device, gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_split_keys(dtype: torch.dtype, device: str, gen: torch.Generator) -> None:
    """The flash-decoding path: the key range split over programs, merged by log-sum-exp;
    some splits see no key of a short request at all."""
    layouts = [P.causal(1), P.causal(1), P.bidirectional(3), P.causal(1)]
    _run(layouts, [130, 1, 40, 17], 8, 4, 32, dtype, device, gen, page=16, num_splits=3)


@pytest.mark.parametrize("layout", ["mixed", "decode_and_verify"])
def test_reference_split_equals_one_padded_batch(layout: str, device: str,
                                                 gen: torch.Generator) -> None:
    """The reference runs one-token chunks apart from longer ones (less padding on CPU);
    that must not change a single value against padding the whole batch together."""
    if layout == "decode_and_verify":
        layouts, contexts = [P.causal(1), P.quadratic(3), P.causal(1), P.causal(1)], [40, 9, 1, 130]
    else:
        layouts, contexts = _layouts(layout, gen)
    batch, q, k, v, k_cache, v_cache = P.make_inputs(layouts, contexts, 5, NUM_BLOCKS, 8, 4, 32,
                                                     torch.float32, device, gen)
    plan = P.plan_of(batch, device)
    split = attention_reference(q, k, v, k_cache, v_cache, plan, 0.2)
    assert len(plan.groups) == 2  # the split really happened
    whole = _padded_attention(q, k, v, k_cache, v_cache, P.plan_of(batch, device), 0.2)
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=1e-6)


def test_no_cache(device: str, gen: torch.Generator) -> None:
    """Prefill without a cache tensor at all (training-style forward)."""
    batch, _ = P.make_batch([P.causal(17), P.quadratic(2)], [0, 0], 4, NUM_BLOCKS, gen)
    t = batch.num_tokens
    q = P.randn((t, 8, 32), torch.float32, device, gen)
    k, v = (P.randn((t, 4, 32), torch.float32, device, gen) for _ in range(2))
    out = attention_triton(q, k, v, None, None, P.plan_of(batch, device), 0.2)
    ref = attention_reference(q, k, v, None, None, P.plan_of(batch, device), 0.2)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)


def test_shape_errors(device: str) -> None:
    q = torch.randn(3, 8, 32, device=device)
    k = torch.randn(3, 3, 32, device=device)
    batch, _ = P.make_batch([P.causal(3)], [0], 4, 4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="group"):
        attention_triton(q, k, k, None, None, P.plan_of(batch, device), 1.0)
