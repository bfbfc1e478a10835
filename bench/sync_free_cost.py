"""What the references' sync-free paths (the ones that run off the CPU) would cost on the CPU,
beside the CPU paths (which skip work no row needs, their host checks being free there): the
reason kernels/kv_store_ref.py and kernels/sampling_ref.py keep both. One torch thread,
tandem-tiny's shapes, best of 5 repeats; wall-clock, so run it under /work/bin/quiet.

    python -m bench.sync_free_cost
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial

import torch

from kernels import kv_store_ref, sampling_ref


@contextmanager
def sync_free_paths():
    """The references as they run off the CPU: no host decision on device values."""
    saved = kv_store_ref.can_read_back, sampling_ref.can_read_back
    kv_store_ref.can_read_back = sampling_ref.can_read_back = lambda x: False
    try:
        yield
    finally:
        kv_store_ref.can_read_back, sampling_ref.can_read_back = saved


def side_by_side_us(fn: Callable[[], object], number: int) -> tuple[float, float]:
    """(CPU path, sync-free path) microseconds per call."""
    def best() -> float:
        return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6

    cpu = best()
    with sync_free_paths():
        free = best()
    return cpu, free


def main() -> None:
    torch.set_num_threads(1)
    print("store_kv_reference, cache [512, 16, 4, 32] fp32, no skipped row")
    for t in (1, 64, 1280):
        kc = torch.zeros(512, 16, 4, 32)
        vc = kc.clone()
        k, v = torch.randn(t, 4, 32), torch.randn(t, 4, 32)
        slots = torch.randperm(512 * 16)[:t]
        cpu, free = side_by_side_us(partial(kv_store_ref.store_kv_reference, kc, vc, k, v, slots),
                                    2000 if t < 1000 else 200)
        print(f"  T={t:5d}  cpu path {cpu:8.1f} us   sync-free path {free:8.1f} us   "
              f"x{free / cpu:.1f}")
    print("sample_reference, V=4096, greedy rows, top-k / top-p off")
    for r in (1, 64, 320):
        x = torch.randn(r, 4096)
        args = (torch.zeros(r), torch.zeros(r, dtype=torch.long), torch.ones(r),
                torch.arange(r), torch.arange(r) + 100)
        cpu, free = side_by_side_us(partial(sampling_ref.sample_reference, x, *args),
                                    max(5, 1000 // r))
        print(f"  R={r:5d}  cpu path {cpu / 1e3:8.3f} ms   sync-free path {free / 1e3:8.3f} ms"
              f"   x{free / cpu:.1f}")


if __name__ == "__main__":
    main()
