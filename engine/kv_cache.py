"""Paged KV-cache bookkeeping: fixed-size blocks, a free list, reference counts, prefix
sharing by block hash, rollback. The tensors themselves live in the executor; this module
only hands out block ids and slot ids.

A block is hashed (and so shareable) once it is full of verified tokens: the hash chains the
previous block's hash with this block's tokens, so equal hashes mean equal prefixes. A freed
block keeps its hash on the free list and can be revived by a later request with the same
prefix until it is handed out again (least recently freed first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class CacheEntry:
    """One request's view of the cache."""

    block_table: list[int] = field(default_factory=list)
    num_cached: int = 0  # tokens whose KV is verified and readable
    num_hashed: int = 0  # leading blocks registered for sharing
    last_hash: int | None = None


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int = 16) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got "
                             f"{num_blocks}, {block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.ref = [0] * num_blocks
        self.hash_of: list[int | None] = [None] * num_blocks
        self.by_hash: dict[int, int] = {}
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # --- allocation ----------------------------------------------------------------------

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= self.num_free

    def allocate(self, num_blocks: int) -> list[int]:
        if not self.can_allocate(num_blocks):
            raise RuntimeError(f"asked for {num_blocks} blocks, {self.num_free} free")
        ids = []
        for _ in range(num_blocks):
            block, _ = self.free.popitem(last=False)
            old = self.hash_of[block]
            if old is not None:  # its prefix is evicted now
                del self.by_hash[old]
                self.hash_of[block] = None
            self.ref[block] = 1
            ids.append(block)
        return ids

    def release(self, ids: Sequence[int]) -> None:
        # Tail blocks first, so that a prefix's head outlives its tail on the free list.
        for block in reversed(ids):
            if self.ref[block] <= 0:
                raise RuntimeError(f"block {block} released twice")
            self.ref[block] -= 1
            if self.ref[block] == 0:
                self.free[block] = None

    # --- prefix sharing ------------------------------------------------------------------

    def forget_prefixes(self) -> None:
        """Stop sharing every cached prefix (the cache tensors were lost or are suspect)."""
        self.by_hash.clear()
        self.hash_of = [None] * self.num_blocks

    @staticmethod
    def chain_hash(prev: int | None, tokens: Sequence[int]) -> int:
        return hash((prev, tuple(tokens)))

    def register(self, block: int, block_hash: int) -> None:
        if block_hash in self.by_hash or self.hash_of[block] is not None:
            return  # an equal block is registered already; this copy stays private
        self.hash_of[block] = block_hash
        self.by_hash[block_hash] = block

    def match_prefix(self, tokens: Sequence[int]) -> tuple[list[int], int | None]:
        """Take shared references to the cached blocks holding tokens' leading full blocks.
        Returns the block ids and the last matched hash."""
        ids: list[int] = []
        prev: int | None = None
        bs = self.block_size
        for start in range(0, len(tokens) - bs + 1, bs):
            h = self.chain_hash(prev, tokens[start:start + bs])
            block = self.by_hash.get(h)
            if block is None:
                break
            if self.ref[block] == 0:
                del self.free[block]
            self.ref[block] += 1
            ids.append(block)
            prev = h
        return ids, prev


class KVCacheManager:
    """Per-request block tables over one BlockPool."""

    def __init__(self, pool: BlockPool) -> None:
        self.pool = pool

    @property
    def block_size(self) -> int:
        return self.pool.block_size

    def attach_prefix(self, entry: CacheEntry, prompt: Sequence[int]) -> int:
        """Share the cached blocks of prompt's prefix; at least one prompt token is left to
        compute, so that the last position's logits exist. Returns tokens reused."""
        usable = prompt[: max(0, len(prompt) - 1)]
        ids, last = self.pool.match_prefix(usable)
        entry.block_table, entry.num_cached = ids, len(ids) * self.block_size
        entry.num_hashed, entry.last_hash = len(ids), last
        return entry.num_cached

    def blocks_needed(self, entry: CacheEntry, num_slots: int) -> int:
        return max(0, self.pool.blocks_for(num_slots) - len(entry.block_table))

    def can_grow(self, entry: CacheEntry, num_slots: int) -> bool:
        return self.pool.can_allocate(self.blocks_needed(entry, num_slots))

    def grow(self, entry: CacheEntry, num_slots: int) -> None:
        """Make slots [0, num_slots) writable."""
        entry.block_table += self.pool.allocate(self.blocks_needed(entry, num_slots))

    def slots(self, entry: CacheEntry, start: int, count: int) -> list[int]:
        bs, table = self.block_size, entry.block_table
        return [table[p // bs] * bs + p % bs for p in range(start, start + count)]

    def set_length(self, entry: CacheEntry, num_cached: int, tokens: Sequence[int]) -> None:
        """Verified length is now num_cached (tokens: the request's token ids). Registers the
        newly full blocks and frees whole blocks past the end (rollback)."""
        entry.num_cached = num_cached
        bs = self.block_size
        while (entry.num_hashed + 1) * bs <= num_cached:
            i = entry.num_hashed
            h = self.pool.chain_hash(entry.last_hash, tokens[i * bs:(i + 1) * bs])
            self.pool.register(entry.block_table[i], h)
            entry.last_hash, entry.num_hashed = h, i + 1
        keep = self.pool.blocks_for(num_cached)
        if len(entry.block_table) > keep:
            self.pool.release(entry.block_table[keep:])
            del entry.block_table[keep:]

    def free(self, entry: CacheEntry) -> None:
        self.pool.release(entry.block_table)
        entry.block_table, entry.num_cached = [], 0
        entry.num_hashed, entry.last_hash = 0, None
