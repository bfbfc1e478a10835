"""The interface every decoding mode implements, and the prefill every mode starts with.

Between iterations a request is in steady state: all its tokens but the last (the seed) are
in the cache. A mode turns that into one chunk per step (work) and, given the step's result,
says which tokens to emit and how long the verified cache is now (update). A mode that needs
several steps for one iteration (linear speculation, diffusion) keeps its state in
request.mode_state and reports is_mid_iteration until the iteration ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from engine.kv_cache import KVCacheManager
from engine.params import Mode
from engine.plan import ChunkWork, WorkResult
from engine.request import Request
from models.batch import Chunk
from policies.modes import MODE_FACTS, ChunkKind


@dataclass
class Advance:
    tokens: list[int]  # emitted in order (may overshoot a stop; the scheduler cuts)
    num_cached: int  # verified cache length after this step
    drafted: int = 0
    accepted: int = 0


@dataclass(frozen=True)
class ModeContext:
    kv: KVCacheManager
    mask_id: int | None  # None: the checkpoint has no mask token (AR only)
    eos_ids: frozenset[int]  # each ends a request (generation_config.json may list several)


def make_work(req: Request, ctx: ModeContext, mode: str, kind: ChunkKind, chunk: Chunk,
              num_writes: int, sample_rows: list[int], sample_positions: list[int],
              **extra) -> ChunkWork:
    s = req.sampling
    start = chunk.positions[0]
    return ChunkWork(
        request_id=req.id, kind=kind, mode=mode,
        chunk=chunk, write_slots=ctx.kv.slots(req.cache, start, num_writes),
        sample_rows=sample_rows, sample_positions=sample_positions,
        temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=s.seed, **extra)


class DecodeMode(ABC):
    mode: Mode

    def __init__(self, ctx: ModeContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def slots_needed(self, req: Request, block: int) -> int:
        """Cache slots [0, n) the next work writes (so the scheduler can allocate)."""

    @abstractmethod
    def work(self, req: Request, block: int) -> ChunkWork:
        """The chunk for this step, from steady state or mid-iteration."""

    @abstractmethod
    def update(self, req: Request, work: ChunkWork, result: WorkResult) -> Advance:
        """Apply the step's result; the acceptance / commit rule lives here."""

    def is_mid_iteration(self, req: Request) -> bool:
        return req.mode_state is not None

    def work_tokens(self, block: int) -> int:
        """Tokens one work of this mode puts in the batch (for token budgets)."""
        return MODE_FACTS[self.mode].work_tokens(block)


def prefill_work(req: Request, ctx: ModeContext, max_tokens: int) -> ChunkWork:
    """A causal chunk over the uncached tokens (at most max_tokens of them): writes their KV
    and, when it reaches the last token, samples the next one (AR's first token / seed)."""
    p = req.cache.num_cached
    pending = req.all_ids[p:p + max_tokens]
    n = len(pending)
    is_last = p + n == req.num_tokens
    chunk = Chunk.causal(pending, p, p, req.cache.block_table)
    rows, positions = ([n - 1], [p + n]) if is_last else ([], [])
    return make_work(req, ctx, "prefill", ChunkKind.PREFILL, chunk, n, rows, positions)


def prefill_advance(req: Request, work: ChunkWork, result: WorkResult) -> Advance:
    cached = req.cache.num_cached + work.num_tokens
    return Advance(tokens=result.tokens[:1], num_cached=cached)
