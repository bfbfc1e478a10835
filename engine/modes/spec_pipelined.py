"""Pipelined self-speculation over two pools: the draft pool drafts, the verify pool verifies.

The verify pool owns the committed KV (req.cache) and runs the causal verify chunk
[seed, d_1 .. d_{B-1}], exactly linear speculation's. The draft pool keeps its own cache of
the request's context (`PipelinedState.entry`, in the draft pool's block pool), kept in step
by recomputation: each draft chunk starts with the tokens that cache lacks, causal, writing
their KV, followed by the bidirectional block to draft (bench/disagg.py measures this
against shipping the verifier's KV; recomputation is the cheaper one).

While block k is verified, the draft pool drafts block k+1 assuming block k is accepted
whole: its chunk is [uncached .. seed_k, d_1 .. d_{B-1} | MASK x B], where mask 0 sits at
the bonus token's position (unknown yet, as in quadratic speculation) and masks 1 .. B-1
are the next drafts. With `hedge`, the draft pool drafts the next block for every
acceptance length instead (one sub-block of B masks per length, the quadratic layout
without its verify part), so a partial acceptance needs no redraft either. Otherwise, on a
partial acceptance the draft is dropped, the draft cache rolled back to the accepted
length, and the next step redrafts from the bonus token: the classic layout
[uncached | seed, MASK x (B-1)].

The verify pass is exact, so whatever the draft pool computes (another tp, another dtype,
or nothing at all) the output is AR's. A request whose draft replica fails degrades to AR
on the verify pool until it finishes.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.draft_plan import DraftPoolView, DraftWork, PipelinedResult, PipelinedWork
from engine.kv_cache import CacheEntry, KVCacheManager
from engine.modes.base import Advance, DecodeMode, ModeContext, make_work
from engine.params import Mode
from engine.plan import ChunkWork, WorkResult
from engine.request import Request
from models.batch import Chunk


@dataclass
class PipelinedState:
    replica: int
    generation: int  # of the replica when this request's draft cache was started
    entry: CacheEntry  # the draft pool's cache of this request (its num_cached: synced)
    drafts: list[int] | None = None  # d_1 .. d_{B-1} for the block at the seed
    degraded: bool = False  # the draft replica failed: AR on the verify pool from now on


def draft_chunk(given: list[int], block: list[int], start: int, sub_limits: list[int],
                table: list[int]) -> Chunk:
    """[given tokens, causal | one sub-block per entry of sub_limits, bidirectional inside].
    Sub-block i sees given[:sub_limits[i] + 1] and itself; its tokens sit at positions
    start + sub_limits[i] + 1 + j. given starts at `start`, the draft cache's length."""
    n, b = len(given), len(block)
    tokens, positions = list(given), list(range(start, start + n))
    causal, lo, hi = list(range(n)), [0] * n, [0] * n
    for i, limit in enumerate(sub_limits):
        first = n + i * b
        tokens += block
        positions += range(start + limit + 1, start + limit + 1 + b)
        causal += [limit] * b
        lo += [first] * b
        hi += [first + b] * b
    return Chunk(tokens, positions, causal, lo, hi, start, table)


class SpecPipelinedMode(DecodeMode):
    mode = Mode.SPEC_PIPELINED

    def __init__(self, ctx: ModeContext, pools: DraftPoolView,
                 draft_kv: list[KVCacheManager], hedge: bool = False) -> None:
        super().__init__(ctx)
        if len(draft_kv) != pools.num_draft_replicas:
            raise ValueError(f"{len(draft_kv)} draft caches for "
                             f"{pools.num_draft_replicas} draft replicas")
        self.pools, self.draft_kv, self.hedge = pools, draft_kv, hedge
        self.states: dict[str, PipelinedState] = {}  # request id -> its live state

    def slots_needed(self, req: Request, block: int) -> int:
        return req.cache.num_cached + block

    def is_mid_iteration(self, req: Request) -> bool:
        return False  # any step may switch away (the sweep frees the draft cache)

    # --- work --------------------------------------------------------------------------------

    def work(self, req: Request, block: int) -> ChunkWork:
        state = self._state(req)
        if state is None or state.degraded:
            return self._ar_work(req)
        if state.drafts is None:  # nothing to verify: draft from the seed, alone
            return self._draft(req, state, block, pipelined=False) or self._ar_work(req)
        p = req.cache.num_cached
        chunk = Chunk.causal([req.all_ids[p]] + state.drafts, p, p, req.cache.block_table)
        # Row i predicts position p + i + 1 (AR's shift) with that position's noise.
        verify = make_work(req, self.ctx, self.mode.value, "verify", chunk, block,
                           list(range(block)), [p + i + 1 for i in range(block)],
                           verify_drafts=state.drafts)
        ahead = None
        if req.remaining_tokens > block and self.pools.is_draft_ready(state.replica):
            ahead = self._draft(req, state, block, pipelined=True)
        return PipelinedWork.of(verify, ahead)

    def _state(self, req: Request) -> PipelinedState | None:
        state = req.mode_state
        if not isinstance(state, PipelinedState):
            self._release(req.id)
            ready = [r for r in range(self.pools.num_draft_replicas)
                     if self.pools.is_draft_ready(r)]
            if not ready:
                return None  # no draft pool now: an AR step, try again next step
            load = {r: 0 for r in ready}
            for s in self.states.values():
                if s.replica in load:
                    load[s.replica] += 1
            replica = min(ready, key=lambda r: (load[r], r))
            state = PipelinedState(replica, self.pools.draft_generation(replica), CacheEntry())
            req.mode_state = self.states[req.id] = state
        if not state.degraded and (
                self.pools.draft_generation(state.replica) != state.generation):
            self._degrade(state)  # its draft cache died with the replica
        return state

    def _ar_work(self, req: Request) -> ChunkWork:
        p = req.cache.num_cached
        chunk = Chunk.causal([req.all_ids[p]], p, p, req.cache.block_table)
        return make_work(req, self.ctx, Mode.AR.value, "ar", chunk, 1, [0], [p + 1])

    def _draft(self, req: Request, state: PipelinedState, block: int,
               pipelined: bool) -> DraftWork | None:
        """The draft chunk, or None when the draft pool's cache has no room for it."""
        p, synced, mask = req.cache.num_cached, state.entry.num_cached, self.ctx.mask_id
        if pipelined:  # the block being verified counts as accepted; mask 0 is its bonus
            given = req.all_ids[synced:p + 1] + state.drafts
            lengths = range(block) if self.hedge else [block - 1]
            limits = [p - synced + a for a in lengths]  # sub-block a follows d_a
            sub = [mask] * block
        else:  # the classic draft: [seed, MASK x (B-1)] after the uncached tokens
            given, limits = req.all_ids[synced:p], [p - synced - 1]
            sub = [req.all_ids[p]] + [mask] * (block - 1)
        kv, n = self.draft_kv[state.replica], len(given)
        if not kv.can_grow(state.entry, synced + n):
            return None
        kv.grow(state.entry, synced + n)
        chunk = draft_chunk(given, sub, synced, limits, list(state.entry.block_table))
        rows = [n + i * block + j for i in range(len(limits)) for j in range(1, block)]
        s = req.sampling
        return DraftWork(
            request_id=req.id, kind="draft", mode=self.mode.value, chunk=chunk,
            write_slots=kv.slots(state.entry, synced, n), sample_rows=rows,
            sample_positions=[chunk.positions[r] for r in rows], temperature=s.temperature,
            top_k=s.top_k, top_p=s.top_p, seed=s.seed, replica=state.replica)

    # --- update ------------------------------------------------------------------------------

    def update(self, req: Request, work: ChunkWork, result: WorkResult) -> Advance:
        state: PipelinedState = req.mode_state
        p = req.cache.num_cached
        if isinstance(work, DraftWork):  # a lone draft
            assert isinstance(result, PipelinedResult)
            if result.draft_failed:
                self._degrade(state)
            else:
                state.drafts = result.tokens
                self._sync(state, p)  # the uncached tokens before the seed are written
            return Advance(tokens=[], num_cached=p)
        # Accept the longest prefix of drafts equal to the verifier's samples, then the
        # verifier's own token after it (the bonus): exactly what AR would have emitted.
        a, drafts = result.accepted, work.verify_drafts
        advance = Advance(tokens=drafts[:a] + [result.tokens[a]], num_cached=p + a + 1,
                          drafted=len(drafts), accepted=a)
        ahead = work.draft if isinstance(work, PipelinedWork) else None
        state.drafts = None
        if ahead is None:
            return advance
        assert isinstance(result, PipelinedResult)
        if result.draft_failed or result.draft is None:
            self._degrade(state)
            return advance
        b = len(drafts) + 1
        lengths = list(range(b)) if self.hedge else [b - 1]
        if a in lengths:  # the draft pool guessed this acceptance: its block is next
            i = lengths.index(a)
            state.drafts = result.draft.tokens[i * (b - 1):(i + 1) * (b - 1)]
        # The draft cache holds seed, d_1 .. d_{B-1}; only seed .. d_a were accepted.
        self._sync(state, p + a + 1)
        return advance

    # --- the draft cache ------------------------------------------------------------------------

    def _sync(self, state: PipelinedState, length: int) -> None:
        """The draft cache is valid for [0, length): roll back (free whole blocks) past it."""
        entry, pool = state.entry, self.draft_kv[state.replica].pool
        entry.num_cached = length
        keep = pool.blocks_for(length)
        if len(entry.block_table) > keep:
            pool.release(entry.block_table[keep:])
            del entry.block_table[keep:]

    def _degrade(self, state: PipelinedState) -> None:
        self.draft_kv[state.replica].free(state.entry)
        state.degraded, state.drafts = True, None

    def _release(self, request_id: str) -> None:
        state = self.states.pop(request_id, None)
        if state is not None and not state.degraded:
            self.draft_kv[state.replica].free(state.entry)

    def sweep(self, live: list[Request]) -> None:
        """Free the draft caches of requests that finished, were aborted, preempted or
        switched mode (the scheduler drops their mode_state): call before each schedule."""
        by_id = {r.id: r for r in live}
        for rid, state in list(self.states.items()):
            req = by_id.get(rid)
            if req is None or req.mode_state is not state:
                self._release(rid)

    def draft_blocks_in_use(self) -> list[int]:
        return [kv.pool.num_blocks - kv.pool.num_free for kv in self.draft_kv]
