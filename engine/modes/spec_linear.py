"""Linear self-speculation: a bidirectional draft pass fills the block, a causal verify pass
checks it. Two forwards per iteration; lossless (every emitted token is AR's)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.modes.base import Advance, DecodeMode, make_work
from engine.params import Mode
from engine.plan import ChunkWork, WorkResult
from engine.request import Request
from models.batch import Chunk
from policies.modes import ChunkKind


@dataclass
class LinearState:
    drafts: list[int]  # d_1 .. d_{B-1}, drafted after the seed


def draft_work(mode: DecodeMode, req: Request, block: int) -> ChunkWork:
    """[seed, MASK x (B-1)], bidirectional, cache read only. Each mask at position q is
    sampled with q's noise: the same noise the verifier will use there."""
    p = req.cache.num_cached
    tokens = [req.all_ids[p]] + [mode.ctx.mask_id] * (block - 1)
    chunk = Chunk.bidirectional(tokens, p, p, req.cache.block_table)
    rows = list(range(1, block))
    return make_work(req, mode.ctx, mode.mode.value, ChunkKind.DRAFT, chunk, 0, rows,
                     [p + r for r in rows])


class SpecLinearMode(DecodeMode):
    mode = Mode.SPEC_LINEAR

    def slots_needed(self, req: Request, block: int) -> int:
        return req.cache.num_cached + block

    def work(self, req: Request, block: int) -> ChunkWork:
        state: LinearState | None = req.mode_state
        if state is None:
            return draft_work(self, req, block)
        p = req.cache.num_cached
        chunk = Chunk.causal([req.all_ids[p]] + state.drafts, p, p, req.cache.block_table)
        n = len(chunk.tokens)
        # Row i predicts position p + i + 1 (AR's shift) with that position's noise.
        return make_work(req, self.ctx, self.mode.value, ChunkKind.VERIFY, chunk, n, list(range(n)),
                         [p + i + 1 for i in range(n)], verify_drafts=state.drafts)

    def update(self, req: Request, work: ChunkWork, result: WorkResult) -> Advance:
        p = req.cache.num_cached
        if work.kind is ChunkKind.DRAFT:
            req.mode_state = LinearState(drafts=result.tokens)
            return Advance(tokens=[], num_cached=p)
        req.mode_state = None
        # Accept the longest prefix of drafts equal to the verifier's samples, then the
        # verifier's own token after it (the bonus): exactly what AR would have emitted.
        a = result.accepted
        drafts = work.verify_drafts
        return Advance(tokens=drafts[:a] + [result.tokens[a]], num_cached=p + a + 1,
                       drafted=len(drafts), accepted=a)
