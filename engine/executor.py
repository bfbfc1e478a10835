"""Runs one step: one forward over every chunk of the plan, KV stores, sampling, acceptance.

The executor owns the model and the cache tensors; it knows nothing of requests or modes.
A sharded group of executors (actors/) runs the same step on every rank.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import torch

from engine.plan import ChunkWork, StepOutput, StepPlan, WorkResult
from kernels import dispatch
from models.batch import ChunkBatch
from models.transformer import TriModeLM


class ExecutorFailure(RuntimeError):
    """The executor could not run a step (e.g. a shard worker died or stalled). The cache
    contents are unknown afterwards; the engine fails the requests that were running."""


class Executor(ABC):
    """What the scheduler's step loop drives: one process, or a group of shard workers."""

    @abstractmethod
    def step(self, plan: StepPlan) -> StepOutput: ...

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        pass


def allocate_kv(model: TriModeLM, num_blocks: int, block_size: int,
                dtype: torch.dtype | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: k, v of [num_blocks, block_size, local kv heads, head_dim]."""
    attn = model.model.layers[0].self_attn
    shape = (num_blocks, block_size, attn.num_kv_heads, attn.head_dim)
    ref = model.lm_head.weight
    dtype = dtype or ref.dtype
    return [(torch.zeros(shape, dtype=dtype, device=ref.device),
             torch.zeros(shape, dtype=dtype, device=ref.device))
            for _ in range(model.config.num_layers)]


class ModelExecutor(Executor):
    def __init__(self, model: TriModeLM, num_blocks: int, block_size: int = 16) -> None:
        self.model = model
        self.device = model.lm_head.weight.device
        self.caches = allocate_kv(model, num_blocks, block_size)

    @torch.inference_mode()
    def step(self, plan: StepPlan) -> StepOutput:
        start = time.perf_counter()
        works = plan.works
        batch = ChunkBatch.from_chunks([w.chunk for w in works], self.device)
        offsets = batch.cu_seqlens.tolist()
        sample_rows = [offsets[i] + r for i, w in enumerate(works) for r in w.sample_rows]
        score_rows = [offsets[i] + r for i, w in enumerate(works) for r in w.score_rows]
        rows = torch.tensor(sample_rows + score_rows, dtype=torch.long, device=self.device)
        out = self.model(batch, self.caches, rows)
        self._store(works, offsets, out.new_k, out.new_v)
        logits = out.logits  # [len(sample_rows) + len(score_rows), V]
        tokens, probs = self._sample(works, logits[: len(sample_rows)])
        accepted = self._accept(works, tokens)
        scores = self._score(works, logits[len(sample_rows):])
        # One host transfer for everything the scheduler needs.
        tok_l, prob_l, acc_l, score_l = (t.tolist() for t in (tokens, probs, accepted, scores))
        results, s, c = [], 0, 0
        for i, w in enumerate(works):
            n, m = len(w.sample_rows), len(w.score_rows)
            results.append(WorkResult(tok_l[s:s + n], prob_l[s:s + n], acc_l[i],
                                      score_l[c:c + m]))
            s, c = s + n, c + m
        return StepOutput(results, time.perf_counter() - start)

    def _store(self, works: list[ChunkWork], offsets: list[int], new_k: torch.Tensor,
               new_v: torch.Tensor) -> None:
        rows = [offsets[i] + j for i, w in enumerate(works) for j in range(len(w.write_slots))]
        if not rows:
            return
        slots = torch.tensor([s for w in works for s in w.write_slots], device=self.device)
        idx = torch.tensor(rows, device=self.device)
        for layer, (k_cache, v_cache) in enumerate(self.caches):
            dispatch.store_kv(k_cache, v_cache, new_k[layer][idx], new_v[layer][idx], slots)

    def _sample(self, works: list[ChunkWork], logits: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        per_row = [(w.temperature, w.top_k, w.top_p, w.seed, pos)
                   for w in works for pos in w.sample_positions]
        if not per_row:
            empty = torch.empty(0, device=self.device)
            return empty.long(), empty
        temp, top_k, top_p, seeds, positions = zip(*per_row, strict=True)
        dev = self.device
        return dispatch.sample(
            logits,
            torch.tensor(temp, dtype=torch.float32, device=dev),
            torch.tensor(top_k, dtype=torch.int32, device=dev),
            torch.tensor(top_p, dtype=torch.float32, device=dev),
            torch.tensor(seeds, dtype=torch.int64, device=dev),
            torch.tensor(positions, dtype=torch.int64, device=dev))

    def _accept(self, works: list[ChunkWork], tokens: torch.Tensor) -> torch.Tensor:
        """Per work: how many leading drafts equal the verifier's tokens at their rows."""
        width = max([len(w.verify_drafts) for w in works] + [1])
        draft = torch.full((len(works), width), -1, dtype=torch.long)
        target_idx = torch.zeros((len(works), width), dtype=torch.long)
        num_draft = torch.zeros(len(works), dtype=torch.long)
        start = 0
        for i, w in enumerate(works):
            n = len(w.verify_drafts)
            if n:
                draft[i, :n] = torch.tensor(w.verify_drafts)
                target_idx[i, :n] = torch.arange(start, start + n)
                num_draft[i] = n
            start += len(w.sample_rows)
        if tokens.numel() == 0:
            return num_draft * 0
        target = tokens[target_idx.to(self.device)]
        return dispatch.accept(draft.to(self.device), target, num_draft.to(self.device))

    def _score(self, works: list[ChunkWork], logits: torch.Tensor) -> torch.Tensor:
        given = [t for w in works for t in w.score_tokens]
        if not given:
            return torch.empty(0, device=self.device)
        idx = torch.tensor(given, device=self.device)[:, None]
        return logits.float().softmax(-1).gather(1, idx)[:, 0]
