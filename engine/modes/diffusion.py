"""Block diffusion: fill a block of masks in parallel over several denoising passes, then one
causal pass writes the block's KV and yields the next seed. Lossy: the text may differ from
AR's, by how much depends on the threshold."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.modes.base import Advance, DecodeMode, make_work
from engine.params import Mode
from engine.plan import ChunkWork, WorkResult
from engine.request import Request
from models.batch import Chunk
from policies.modes import ChunkKind


@dataclass
class DiffusionState:
    block: list[int]  # [seed, tokens or MASK ...]
    committed_now: set[int] = field(default_factory=set)  # committed in the last pass
    revisions: list[int] = field(default_factory=list)  # re-masks so far, per position
    ready: bool = False  # no mask left: the next step is the causal commit pass


class DiffusionMode(DecodeMode):
    mode = Mode.DIFFUSION

    def slots_needed(self, req: Request, block: int) -> int:
        return req.cache.num_cached + block

    def work(self, req: Request, block: int) -> ChunkWork:
        mask = self.ctx.mask_id
        p = req.cache.num_cached
        state: DiffusionState | None = req.mode_state
        if state is None:
            state = DiffusionState(block=[req.all_ids[p]] + [mask] * (block - 1),
                                   revisions=[0] * block)
            req.mode_state = state
        table = req.cache.block_table
        b = len(state.block)
        if state.ready:
            # Causal pass over the finished block: writes its KV, samples the next seed.
            chunk = Chunk.causal(state.block, p, p, table)
            return make_work(req, self.ctx, self.mode.value, ChunkKind.COMMIT, chunk, b,
                             [b - 1], [p + b])
        chunk = Chunk.bidirectional(state.block, p, p, table)
        masked = [i for i in range(1, b) if state.block[i] == mask]
        extra = {}
        if req.decode.revision_threshold > 0:
            # Score the committed tokens (seed excluded) to find ones that lost confidence.
            rows = [i for i in range(1, b) if state.block[i] != mask
                    and i not in state.committed_now
                    and state.revisions[i] < req.decode.max_revisions]
            extra = {"score_rows": rows, "score_tokens": [state.block[i] for i in rows]}
        positions = [p + i for i in masked]
        return make_work(req, self.ctx, self.mode.value, ChunkKind.DENOISE, chunk, 0, masked,
                         positions, **extra)

    def update(self, req: Request, work: ChunkWork, result: WorkResult) -> Advance:
        p = req.cache.num_cached
        state: DiffusionState = req.mode_state
        if work.kind is ChunkKind.COMMIT:
            req.mode_state = None
            b = len(state.block)
            return Advance(tokens=state.block[1:] + result.tokens, num_cached=p + b)
        threshold = req.current_threshold  # the policy's for this block, or the request's
        self._commit(state, work, result,
                     req.decode.threshold if threshold is None else threshold)
        self._revise(state, work, result, req.decode.revision_threshold)
        eos = None if req.sampling.ignore_eos else self._finished_at_eos(state)
        if eos is not None:  # the block ends the request: no commit pass needed
            req.mode_state = None
            return Advance(tokens=state.block[1:eos + 1], num_cached=p)
        state.ready = self.ctx.mask_id not in state.block
        return Advance(tokens=[], num_cached=p)

    def _commit(self, state: DiffusionState, work: ChunkWork, result: WorkResult,
                threshold: float) -> None:
        # Commit every masked position whose confidence reaches the threshold, and always
        # at least the single most confident one, so each pass makes progress.
        best = max(range(len(result.probs)), key=result.probs.__getitem__)
        state.committed_now = set()
        for k, (row, tok, prob) in enumerate(zip(work.sample_rows, result.tokens,
                                                 result.probs, strict=True)):
            if prob >= threshold or k == best:
                state.block[row] = tok
                state.committed_now.add(row)

    def _revise(self, state: DiffusionState, work: ChunkWork, result: WorkResult,
                threshold: float) -> None:
        # Re-mask a committed token whose probability fell under the revision threshold
        # now that more of the block is known (bounded per position by max_revisions).
        for row, score in zip(work.score_rows, result.scores, strict=True):
            if score < threshold:
                state.block[row] = self.ctx.mask_id
                state.revisions[row] += 1

    def _finished_at_eos(self, state: DiffusionState) -> int | None:
        """Index of the first EOS if every position up to it is filled."""
        for i in range(1, len(state.block)):
            tok = state.block[i]
            if tok == self.ctx.mask_id:
                return None
            if tok in self.ctx.eos_ids:
                return i
        return None
