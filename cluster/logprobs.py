"""Log-probabilities of emitted tokens, for OpenAI's `logprobs`.

The decode modes return tokens, not distributions, so the model server scores what was
emitted with one extra causal pass through the same executor (local or sharded), with no KV
writes: over the tokens after the request's verified cache (read through its block table),
or over prompt + output without a cache once the request has finished and its blocks are
gone. Row p-1 of that pass is the AR distribution of the token at p, which is the
distribution every lossless mode samples from (docs/ARCHITECTURE.md), so the numbers are
right whichever mode ran. For each new token the pass scores the chosen token (score rows)
and draws the greedy top token with its probability (sample rows at temperature 0). Logprobs
are of the model's raw softmax (temperature 1, no top-p), as in vLLM. Cost: per step that
emits, one forward over the tokens the cache does not hold (a few), only for requests that
ask; the whole sequence once, for the last step."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cluster.job import TokenLogprob
from engine.executor import Executor
from engine.plan import ChunkWork, StepPlan
from models.batch import Chunk
from policies.modes import ChunkKind


@dataclass(frozen=True)
class ScoreRequest:
    ids: Sequence[int]  # prompt + output so far
    first: int  # absolute position of the first token to score (>= 1)
    num_cached: int = 0  # leading ids whose KV the cache holds, readable through block_table
    block_table: Sequence[int] = ()


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -9999.0


class LogprobScorer:
    def __init__(self, executor: Executor, detok: Callable[[Sequence[int]], str]) -> None:
        self.executor, self.detok = executor, detok

    def score(self, requests: list[ScoreRequest]) -> list[list[TokenLogprob]]:
        """Per request: one TokenLogprob per token at positions first .. len(ids)-1."""
        if not requests:
            return []
        works = []
        for i, r in enumerate(requests):
            if r.first < 1 or r.first >= len(r.ids):
                raise ValueError(f"nothing to score: first={r.first}, {len(r.ids)} tokens")
            ids = list(r.ids)
            # The pass starts at token c: the cache holds 0..c-1, and token first-1 must be
            # fed, since its row predicts the first token scored.
            c = min(r.num_cached, r.first - 1) if r.block_table else 0
            preds = range(r.first - 1, len(ids) - 1)  # token p-1 predicts token p
            rows = [p - c for p in preds]
            works.append(ChunkWork(
                request_id=f"logprobs-{i}", kind=ChunkKind.SCORE, mode="score",
                chunk=Chunk.causal(ids[c:], c, c, r.block_table), sample_rows=rows,
                sample_positions=[p + 1 for p in preds], score_rows=rows,
                score_tokens=[ids[p + 1] for p in preds], temperature=0.0))
        out = self.executor.step(StepPlan(works))
        return [self._entries(w, res) for w, res in zip(works, out.results, strict=True)]

    def _entries(self, work: ChunkWork, res) -> list[TokenLogprob]:  # noqa: ANN001
        return [TokenLogprob(tok, self.detok([tok]), _log(p), top, self.detok([top]), _log(q))
                for tok, p, top, q in zip(work.score_tokens, res.scores, res.tokens, res.probs,
                                          strict=True)]
