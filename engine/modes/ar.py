"""Autoregressive decoding: one token per forward."""

from __future__ import annotations

from engine.modes.base import Advance, DecodeMode, make_work
from engine.params import Mode
from engine.plan import ChunkWork, WorkResult
from engine.request import Request
from models.batch import Chunk
from policies.modes import ChunkKind


class ARMode(DecodeMode):
    mode = Mode.AR

    def slots_needed(self, req: Request, block: int) -> int:
        return req.num_tokens

    def work(self, req: Request, block: int) -> ChunkWork:
        p = req.cache.num_cached  # the seed sits at p
        chunk = Chunk.causal([req.all_ids[p]], p, p, req.cache.block_table)
        return make_work(req, self.ctx, self.mode.value, ChunkKind.AR, chunk, 1, [0], [p + 1])

    def update(self, req: Request, work: ChunkWork, result: WorkResult) -> Advance:
        return Advance(tokens=result.tokens, num_cached=req.cache.num_cached + 1)
