"""Runs one step: one forward over every chunk of the plan, KV stores, sampling, acceptance.

The executor owns the model and the cache tensors; it knows nothing of requests or modes.
A sharded group of executors (actors/) runs the same step on every rank.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import torch

from engine.device_io import DeviceIO
from engine.plan import StepOutput, StepPlan, WorkResult
from engine.step_inputs import PlanLayout, StepInputs, floats_from_bits, pack_plan
from kernels import dispatch
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
    """Runs steps on one device: the plan goes up in one upload (engine/step_inputs.py), the
    forward, KV store, sampling and acceptance stay on the device, and the results come
    back in one download (engine/device_io.py)."""

    def __init__(self, model: TriModeLM, num_blocks: int, block_size: int = 16) -> None:
        self.model = model
        self.device = model.lm_head.weight.device
        self.caches = allocate_kv(model, num_blocks, block_size)
        self.io = DeviceIO(self.device)

    @torch.inference_mode()
    def step(self, plan: StepPlan) -> StepOutput:
        start = time.perf_counter()
        values, layout = pack_plan(plan.works)
        inputs = StepInputs.unpack(self.io.upload(values), layout)
        out = self.model(inputs.batch, self.caches, inputs.logits_rows)
        self._store(inputs, out.new_k, out.new_v)
        logits = out.logits  # [S + C, V]: the sampled rows, then the scored ones
        tokens, probs = self._sample(inputs, layout, logits[: layout.num_sample])
        accepted = self._accept(inputs, layout, tokens)
        scores = self._score(inputs, layout, logits[layout.num_sample:])
        packed = torch.cat([tokens, _bits(probs), accepted.long(), _bits(scores)])
        host = self.io.download(packed)  # the step's one device->host transfer
        return StepOutput(cut_results(host, layout), time.perf_counter() - start)

    def _store(self, inputs: StepInputs, new_k: torch.Tensor, new_v: torch.Tensor) -> None:
        if inputs.store_rows.numel() == 0:
            return
        keys = new_k[:, inputs.store_rows]  # [L, W, KVH, D]
        values = new_v[:, inputs.store_rows]
        for layer, (k_cache, v_cache) in enumerate(self.caches):
            dispatch.store_kv(k_cache, v_cache, keys[layer], values[layer], inputs.store_slots)

    def _sample(self, inputs: StepInputs, layout: PlanLayout, logits: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if layout.num_sample == 0:
            return (torch.empty(0, dtype=torch.long, device=self.device),
                    torch.empty(0, device=self.device))
        return dispatch.sample(logits, inputs.temperature, inputs.top_k, inputs.top_p,
                               inputs.seeds, inputs.sample_positions)

    def _accept(self, inputs: StepInputs, layout: PlanLayout, tokens: torch.Tensor
                ) -> torch.Tensor:
        """Per work: how many leading drafts equal the verifier's tokens at their rows."""
        if layout.num_sample == 0:
            return inputs.num_draft * 0
        target = tokens[inputs.draft_target]  # [N, width]
        return dispatch.accept(inputs.draft, target, inputs.num_draft)

    def _score(self, inputs: StepInputs, layout: PlanLayout, logits: torch.Tensor
               ) -> torch.Tensor:
        if layout.num_score == 0:
            return torch.empty(0, device=self.device)
        idx = inputs.score_tokens[:, None]
        return logits.float().softmax(-1).gather(1, idx)[:, 0]


def _bits(x: torch.Tensor) -> torch.Tensor:
    """float32 values as int64 bit patterns, to travel in the int64 result buffer."""
    return x.float().view(torch.int32).long()


def cut_results(host: list[int], layout: PlanLayout) -> list[WorkResult]:
    """Cut the downloaded [S tokens | S probs | N accepted | C scores] into per-work results."""
    s, n = layout.num_sample, layout.num_chunks
    tok_l, acc_l = host[:s], host[2 * s:2 * s + n]
    prob_l = floats_from_bits(host[s:2 * s])
    score_l = floats_from_bits(host[2 * s + n:])
    results, i, j = [], 0, 0
    for w, (ns, nc) in enumerate(zip(layout.sample_counts, layout.score_counts, strict=True)):
        results.append(WorkResult(tok_l[i:i + ns], prob_l[i:i + ns], acc_l[w],
                                  score_l[j:j + nc]))
        i, j = i + ns, j + nc
    return results
