"""KV store through slots and speculative acceptance: Triton against the references."""

from __future__ import annotations

import pytest
import torch

from kernels.accept_ref import accept_reference
from kernels.accept_triton import accept_triton
from kernels.kv_store_ref import store_kv_reference
from kernels.kv_store_triton import store_kv_triton
from tests.kernels.plans import randn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("tokens,page,kv_heads,head_dim", [(1, 16, 4, 32), (3, 5, 2, 24),
                                                             (17, 1, 4, 32), (130, 7, 1, 16)])
def test_store_kv(tokens: int, page: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                  device: str, gen: torch.Generator) -> None:
    num_blocks = -(-tokens // page) + 3
    # The cache starts NaN: slots the kernel writes wrongly or misses differ from the
    # reference's (compared with NaN == NaN).
    k_cache = torch.full((num_blocks, page, kv_heads, head_dim), float("nan"), dtype=dtype,
                         device=device)
    v_cache = k_cache.clone()
    k = randn((tokens, kv_heads, head_dim), dtype, device, gen)
    v = randn((tokens, kv_heads, head_dim), dtype, device, gen)
    slots = torch.randperm(num_blocks * page, generator=gen)[:tokens]
    slots[torch.rand(tokens, generator=gen) < 0.3] = -1  # skipped tokens
    slots = slots.to(device)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    store_kv_triton(k_cache, v_cache, k, v, slots)
    store_kv_reference(k_ref, v_ref, k, v, slots)
    torch.testing.assert_close(k_cache, k_ref, atol=0, rtol=0, equal_nan=True)
    torch.testing.assert_close(v_cache, v_ref, atol=0, rtol=0, equal_nan=True)


def test_store_kv_casts_to_cache_dtype(device: str, gen: torch.Generator) -> None:
    k_cache = torch.full((2, 4, 2, 8), float("nan"), dtype=torch.float16, device=device)
    v_cache = k_cache.clone()
    k, v = (randn((3, 2, 8), torch.float32, device, gen) for _ in range(2))
    slots = torch.tensor([5, -1, 0], device=device)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    store_kv_triton(k_cache, v_cache, k, v, slots)
    store_kv_reference(k_ref, v_ref, k, v, slots)
    torch.testing.assert_close(k_cache, k_ref, atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize("rows,width", [(1, 1), (3, 3), (17, 8), (130, 17)])
def test_accept(rows: int, width: int, device: str, gen: torch.Generator) -> None:
    # A small alphabet makes long accepted prefixes common; num_draft covers 0 .. width.
    draft = torch.randint(0, 2, (rows, width), generator=gen)
    target = torch.where(torch.rand(rows, width, generator=gen) < 0.8, draft, 1 - draft)
    num_draft = torch.randint(0, width + 1, (rows,), generator=gen)
    draft, target, num_draft = draft.to(device), target.to(device), num_draft.to(device)
    got = accept_triton(draft, target, num_draft)
    assert got.dtype == torch.int64
    assert torch.equal(got, accept_reference(draft, target, num_draft))


def test_accept_full_and_empty(device: str) -> None:
    draft = torch.tensor([[4, 5, 6], [4, 5, 6], [4, 5, 6]], device=device)
    target = torch.tensor([[4, 5, 6], [7, 5, 6], [4, 5, 6]], device=device)
    num_draft = torch.tensor([3, 3, 2], device=device)
    assert accept_triton(draft, target, num_draft).tolist() == [3, 0, 2]
