"""The KV store and sampling references off the CPU: no host read (on the meta device every
read-back raises, as it would sync a GPU and break CUDA-graph capture), and the same bits as
the CPU path, which may skip work no row needs because its host reads are free."""

from __future__ import annotations

import pytest
import torch

from kernels import kv_store_ref, sampling_ref
from kernels.kv_store_ref import store_kv_reference
from kernels.sampling_ref import sample_reference


def test_store_kv_has_no_host_read_off_the_cpu() -> None:
    k_cache = torch.empty(4, 16, 2, 8, device="meta")
    v_cache = torch.empty_like(k_cache)
    k = torch.empty(5, 2, 8, device="meta", dtype=torch.float32)
    store_kv_reference(k_cache, v_cache, k, k.clone(), torch.empty(5, dtype=torch.long,
                                                                   device="meta"))


def _store_both_ways(slots: list[int], num_slots: int, gen: torch.Generator,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    t = len(slots)
    # NaN cache: a slot written wrongly, or missed, differs (compared NaN == NaN).
    cache = torch.full((num_slots, 1, 2, 4), float("nan"), dtype=torch.float16)
    cache[0] = 7.0  # slot 0 holds values: a stand-in that clobbers it shows
    k, v = (torch.randn(t, 2, 4, generator=gen) for _ in range(2))  # fp32: cast on store
    want = [cache.clone(), cache.clone()]
    store_kv_reference(*want, k, v, torch.tensor(slots))
    got = [cache.clone(), cache.clone()]
    with monkeypatch.context() as m:
        m.setattr(kv_store_ref, "can_read_back", lambda x: False)
        store_kv_reference(*got, k, v, torch.tensor(slots))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize("slots", [
    [5, -1, 0, -1],  # skipped rows beside a kept row that writes slot 0
    [-1, -1, 3],  # the first kept row is not the first row
    [-1, -1, -1],  # nothing kept: slot 0 must keep its contents
    [-1],
    [2, 9, 4],  # nothing skipped
])
def test_store_kv_off_the_cpu_writes_what_the_cpu_path_writes(
        slots: list[int], gen: torch.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    _store_both_ways(slots, 12, gen, monkeypatch)


def test_store_kv_off_the_cpu_on_random_skips(gen: torch.Generator,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(20):
        t = int(torch.randint(1, 30, (1,), generator=gen))
        slots = torch.randperm(40, generator=gen)[:t]
        slots[torch.rand(t, generator=gen) < 0.4] = -1
        _store_both_ways(slots.tolist(), 40, gen, monkeypatch)


def _sampling_params(temperature: list[float], top_k: list[int], top_p: list[float]
                     ) -> tuple[torch.Tensor, ...]:
    rows = len(temperature)
    return (torch.tensor(temperature), torch.tensor(top_k), torch.tensor(top_p),
            torch.arange(rows, dtype=torch.long) * 977 + 5,
            torch.arange(rows, dtype=torch.long) + 300)


@pytest.mark.parametrize("greedy_only", [True, False])
def test_sample_has_no_host_read_off_the_cpu(greedy_only: bool) -> None:
    rows, vocab = 6, 50
    temperature = [0.0] * rows if greedy_only else [0.0, 0.7] * (rows // 2)
    params = _sampling_params(temperature, [0] * rows, [1.0] * rows)
    logits = torch.empty(rows, vocab, device="meta")
    tokens, probs = sample_reference(logits, *(p.to("meta") for p in params))
    assert tokens.shape == (rows,) and probs.shape == (rows,)


@pytest.mark.parametrize("temperature,top_k,top_p", [
    ([0.0] * 4, [0] * 4, [1.0] * 4),  # CPU: neither filter nor noise
    ([0.0, 0.9, 1.3, 0.0], [0] * 4, [1.0] * 4),  # CPU: noise, no filter
    ([0.0, 0.9, 0.0, 0.5], [0, 5, 0, 0], [1.0, 1.0, 1.0, 0.8]),  # CPU: both
])
def test_sample_off_the_cpu_draws_the_cpu_paths_bits(
        temperature: list[float], top_k: list[int], top_p: list[float],
        gen: torch.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    logits = torch.randn(len(temperature), 300, generator=gen) * 3
    logits[:, ::7] = float("-inf")  # banned tokens: the filter must keep them out, not in
    params = _sampling_params(temperature, top_k, top_p)
    want = sample_reference(logits, *params)
    monkeypatch.setattr(sampling_ref, "can_read_back", lambda x: False)
    got = sample_reference(logits, *params)
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])
