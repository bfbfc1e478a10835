"""The reference (the CPU path), grouped by chunk length and by context, against a plain
per-request attention written from the visibility rules of models/batch.py."""

from __future__ import annotations

import pytest
import torch

from kernels import attention_groups
from kernels.attention_groups import context_cuts
from kernels.attention_ref import attention_reference
from tests.kernels import plans as P

NUM_BLOCKS = 512  # room for every context below (make_batch never shares a block)
PAGE = 16


def _per_request(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                 v_cache: torch.Tensor, batch, window: int | None, scale: float
                 ) -> torch.Tensor:
    """One chunk at a time, one query row at a time, in float64."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    out = torch.empty_like(q)
    cu = batch.cu_seqlens.tolist()
    for c in range(batch.num_chunks):
        a, b = cu[c], cu[c + 1]
        ctx = int(batch.context_lens[c])
        slots = [int(batch.block_tables[c, j // PAGE]) * PAGE + j % PAGE for j in range(ctx)]
        keys = torch.cat([k_cache.flatten(0, 1)[slots].double(), k[a:b]])
        values = torch.cat([v_cache.flatten(0, 1)[slots].double(), v[a:b]])
        key_pos = list(range(ctx)) + batch.positions[a:b].tolist()
        for r in range(a, b):
            limit, lo, hi = (int(x[r]) for x in (batch.causal_limit, batch.block_lo,
                                                  batch.block_hi))
            seen = [j < ctx or (j - ctx <= limit or lo <= j - ctx < hi)
                    for j in range(len(key_pos))]
            if window is not None:
                pos = int(batch.positions[r])
                seen = [s and p > pos - window for s, p in zip(seen, key_pos, strict=True)]
            seen_t = torch.tensor(seen)
            for head in range(q.shape[1]):
                kv = head // group
                scores = (keys[seen_t, kv] @ q[r, head]) * scale
                out[r, head] = torch.softmax(scores, 0) @ values[seen_t, kv]
    return out


def _check(layouts: list, contexts: list[int], heads: int, kv_heads: int,
           window: int | None = None, dtype: torch.dtype = torch.float32,
           min_groups: int = 1) -> None:
    gen = torch.Generator().manual_seed(7)
    batch, q, k, v, k_cache, v_cache = P.make_inputs(layouts, contexts, PAGE, NUM_BLOCKS, heads,
                                                     kv_heads, 16, dtype, "cpu", gen)
    plan = P.plan_of(batch, "cpu", window)
    out = attention_reference(q, k, v, k_cache, v_cache, plan, 0.25)
    assert len(plan.groups) >= min_groups
    want = _per_request(q, k, v, k_cache, v_cache, batch, window, 0.25)
    tol = 2e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)


SPREAD = [1, 600, 3, 250, 40, 590, 7, 120, 333, 0, 480, 60] * 2  # staggered arrivals


@pytest.mark.parametrize("heads,kv_heads", [(6, 2), (4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_decodes_spread_widely(heads: int, kv_heads: int, dtype: torch.dtype) -> None:
    """Decodes cut into several groups by context (at the default group cost): GQA groups
    of 3 and none."""
    _check([P.causal(1)] * len(SPREAD), SPREAD, heads, kv_heads, dtype=dtype, min_groups=2)


@pytest.fixture
def cheap_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches cut into groups too."""
    monkeypatch.setattr(attention_groups, "GROUP_COST_KEY_ROWS", 64)


@pytest.mark.usefixtures("cheap_groups")
def test_mixed_prefill_verify_decode() -> None:
    gen = torch.Generator().manual_seed(3)
    layouts = ([P.causal(1)] * 6 + [P.causal(9), P.quadratic(3), P.bidirectional(4),
                                    P.scattered(6, gen)])
    contexts = [590, 2, 300, 11, 451, 0] + [0, 77, 250, 13]
    _check(layouts, contexts, 6, 2, min_groups=3)


@pytest.mark.usefixtures("cheap_groups")
@pytest.mark.parametrize("window", [1, 7, 300])
def test_sliding_window(window: int) -> None:
    layouts = [P.causal(1)] * 6 + [P.causal(9), P.quadratic(2)]
    contexts = [590, 2, 300, 11, 451, 0, 40, 260]
    _check(layouts, contexts, 8, 4, window=window, min_groups=3)


def test_context_cuts() -> None:
    assert context_cuts([]) == [0]
    assert context_cuts([500] * 64) == [0]  # lockstep: one group
    assert context_cuts([130, 120, 100, 80, 40, 20]) == [0]  # saving too small for a group
    spread = sorted(range(20, 1000, 15), reverse=True)
    cuts = context_cuts(spread, group_cost=4096, max_groups=4)
    assert cuts[0] == 0 and len(cuts) == 4 and cuts == sorted(cuts)
    assert len(context_cuts(spread, group_cost=4096, max_groups=2)) == 2
    # each cut is worth its cost: padding everything after it to the group top costs more
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        assert (spread[a] - spread[b]) * (len(spread) - b) > 4096


@pytest.mark.parametrize("window", [None, 5])
def test_no_host_sync_off_the_cpu(window: int | None) -> None:
    """On the meta device every op that reads a device value back to the host (bool(), .item(),
    .tolist(), nonzero, repeat_interleave without its size) raises, as it would sync a GPU:
    the reference off the CPU must run without one."""
    gen = torch.Generator().manual_seed(3)
    layouts = [P.causal(1), P.causal(1), P.quadratic(3), P.bidirectional(4)]
    batch, q, k, v, k_cache, v_cache = P.make_inputs(layouts, [300, 7, 40, 0], PAGE, NUM_BLOCKS,
                                                     4, 2, 16, torch.float32, "cpu", gen)
    plan = P.plan_of(batch, "meta", window)
    out = attention_reference(*(x.to("meta") for x in (q, k, v, k_cache, v_cache)), plan, 0.25)
    assert out.shape == q.shape and out.device.type == "meta"
