"""bench.sync_free_cost times the references' off-CPU paths on the CPU, and puts them back."""

from __future__ import annotations

import torch

from bench.sync_free_cost import sync_free_paths
from kernels import kv_store_ref, sampling_ref


def test_sync_free_paths_are_forced_inside_and_restored_after() -> None:
    x = torch.zeros(1)
    with sync_free_paths():
        assert not kv_store_ref.can_read_back(x) and not sampling_ref.can_read_back(x)
    assert kv_store_ref.can_read_back(x) and sampling_ref.can_read_back(x)
