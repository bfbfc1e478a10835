"""Block pool and per-request tables: sharing, rollback, eviction, no leaks."""

from __future__ import annotations

import pytest

from engine.kv_cache import BlockPool, CacheEntry, KVCacheManager


def make(num_blocks: int = 16) -> KVCacheManager:
    return KVCacheManager(BlockPool(num_blocks, block_size=16))


def test_two_requests_with_the_same_64_token_prefix_share_its_blocks() -> None:
    kv = make()
    prompt = list(range(100, 164)) + [1, 2, 3]
    a = CacheEntry()
    kv.attach_prefix(a, prompt)
    kv.grow(a, len(prompt))
    kv.set_length(a, len(prompt), prompt)  # prefill done: 4 full blocks registered
    b = CacheEntry()
    reused = kv.attach_prefix(b, list(range(100, 164)) + [9, 9])
    assert reused == 64
    assert b.block_table == a.block_table[:4]
    assert all(kv.pool.ref[blk] == 2 for blk in a.block_table[:4])
    kv.free(a)
    kv.free(b)
    assert kv.pool.num_free == kv.pool.num_blocks


def test_a_whole_cached_prompt_still_leaves_one_token_to_compute() -> None:
    kv = make()
    prompt = list(range(32))
    a = CacheEntry()
    kv.grow(a, 32)
    kv.set_length(a, 32, prompt)
    b = CacheEntry()
    assert kv.attach_prefix(b, prompt) == 16  # the last block is recomputed
    kv.free(a)
    kv.free(b)


def test_rollback_frees_whole_blocks_only() -> None:
    kv = make()
    e = CacheEntry()
    kv.grow(e, 40)  # 3 blocks
    assert kv.pool.num_free == 13
    kv.set_length(e, 17, list(range(40)))  # 2 blocks still needed
    assert len(e.block_table) == 2 and kv.pool.num_free == 14
    kv.free(e)
    assert kv.pool.num_free == 16


def test_freed_prefix_is_revived_until_its_block_is_reused() -> None:
    kv = make(num_blocks=4)
    prompt = list(range(33))
    a = CacheEntry()
    kv.grow(a, 33)
    kv.set_length(a, 33, prompt)
    kv.free(a)
    b = CacheEntry()
    assert kv.attach_prefix(b, prompt) == 32  # revived from the free list
    kv.free(b)
    c = CacheEntry()
    kv.grow(c, 64)  # takes every block: the cached prefix is evicted
    kv.free(c)
    d = CacheEntry()
    assert kv.attach_prefix(d, prompt) == 0


def test_slots_follow_the_block_table() -> None:
    kv = make()
    e = CacheEntry(block_table=[7, 3])
    assert kv.slots(e, 14, 4) == [7 * 16 + 14, 7 * 16 + 15, 3 * 16, 3 * 16 + 1]


def test_double_release_and_over_allocation_are_errors() -> None:
    pool = BlockPool(2, 16)
    ids = pool.allocate(2)
    with pytest.raises(RuntimeError, match="1 free"):
        BlockPool(1, 16).allocate(2)
    pool.release(ids)
    with pytest.raises(RuntimeError, match="released twice"):
        pool.release(ids)
