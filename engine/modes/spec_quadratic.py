"""Quadratic self-speculation (TiDAR style): one forward verifies the current draft and, in
the same pass, drafts the next block for every possible acceptance length.

Chunk layout for a block of B (drafts first, then one sub-block of B masks per draft):
  [d_0 .. d_{B-1} | masks after d_0 | masks after d_1 | ... | masks after d_{B-1}]
d_0 is the seed (verified), d_1.. are drafts. d_i is causal (sees d_0 .. d_i); the masks of
sub-block i see d_0 .. d_i and their own sub-block, and mask j sits at position(d_i) + 1 + j.
If d_1 .. d_a are accepted, the bonus token lands where mask 0 of sub-block a sits, and that
sub-block's masks 1 .. B-1 are the next drafts.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.modes.base import Advance, DecodeMode, make_work
from engine.modes.spec_linear import draft_work
from engine.params import Mode
from engine.plan import ChunkWork, WorkResult
from engine.request import Request
from models.batch import Chunk
from policies.modes import ChunkKind


@dataclass
class QuadraticState:
    drafts: list[int]  # d_1 .. d_{B-1} after the seed


def quadratic_chunk(seed: int, drafts: list[int], p: int, mask_id: int,
                    context_len: int, block_table: list[int]) -> Chunk:
    b = len(drafts) + 1
    tokens = [seed] + drafts + [mask_id] * (b * b)
    positions = list(range(p, p + b))
    causal = list(range(b))
    lo, hi = [0] * b, [0] * b
    for i in range(b):
        start = b + i * b
        positions += range(p + i + 1, p + i + 1 + b)
        causal += [i] * b
        lo += [start] * b
        hi += [start + b] * b
    return Chunk(tokens, positions, causal, lo, hi, context_len, block_table)


class SpecQuadraticMode(DecodeMode):
    mode = Mode.SPEC_QUADRATIC

    def slots_needed(self, req: Request, block: int) -> int:
        return req.cache.num_cached + block

    def is_mid_iteration(self, req: Request) -> bool:
        return False  # drafts carry over, but any step may switch away and drop them

    def work(self, req: Request, block: int) -> ChunkWork:
        state: QuadraticState | None = req.mode_state
        if state is None or len(state.drafts) != block - 1:
            return draft_work(self, req, block)  # first iteration: plain draft pass
        p = req.cache.num_cached
        chunk = quadratic_chunk(req.all_ids[p], state.drafts, p, self.ctx.mask_id, p,
                                req.cache.block_table)
        b = block
        verify_rows = list(range(b))
        mask_rows = list(range(b, b + b * b))
        positions = [p + i + 1 for i in verify_rows] + chunk.positions[b:]
        return make_work(req, self.ctx, self.mode.value, ChunkKind.QUADRATIC, chunk, b,
                         verify_rows + mask_rows, positions, verify_drafts=state.drafts)

    def update(self, req: Request, work: ChunkWork, result: WorkResult) -> Advance:
        p = req.cache.num_cached
        if work.kind is ChunkKind.DRAFT:
            req.mode_state = QuadraticState(drafts=result.tokens)
            return Advance(tokens=[], num_cached=p)
        b = len(work.verify_drafts) + 1
        a = result.accepted
        bonus = result.tokens[a]
        # Sub-block a was drafted for exactly this acceptance; its mask 0 is the bonus slot.
        sub = result.tokens[b + a * b: b + (a + 1) * b]
        req.mode_state = QuadraticState(drafts=sub[1:])
        drafts = work.verify_drafts
        return Advance(tokens=drafts[:a] + [bonus], num_cached=p + a + 1,
                       drafted=len(drafts), accepted=a)
