"""One process's engine: requests in, the step loop, outputs out.

    plan = scheduler.schedule(); out = executor.step(plan); scheduler.update(plan, out)

The policy's decision is made inside schedule(), once, from a read-only view; what the step
measured reaches it as data in the next view (docs/ARCHITECTURE.md, "The step loop").
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from engine.executor import Executor, ModelExecutor
from engine.kv_cache import BlockPool, KVCacheManager
from engine.kv_sizing import KVRequest, KVSizing, measure_gpu_budget, size_kv
from engine.model_limits import context_limit, decode_for_checkpoint
from engine.modes.ar import ARMode
from engine.modes.base import ModeContext
from engine.modes.diffusion import DiffusionMode
from engine.modes.spec_linear import SpecLinearMode
from engine.modes.spec_quadratic import SpecQuadraticMode
from engine.params import DecodeParams, Mode, SamplingParams
from engine.plan import StepPlan
from engine.policy import SchedulingPolicy
from engine.request import Request
from engine.scheduler import Scheduler, SchedulerConfig, StepEvents
from engine.stop import final_text, stable_text
from models.checkpoint import DEFAULT_MODEL_DIR, load_checkpoint
from models.config import ModelConfig
from models.dtype import DTYPES, resolve_dtype
from models.fuse import fuse_projections
from models.tokenizer import TextCodec
from policies.slo import SLO


@dataclass(frozen=True)
class EngineConfig:
    num_blocks: int = 512
    block_size: int = 16
    max_model_len: int | None = None  # None = the model's max_position_embeddings
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def __post_init__(self) -> None:
        if self.num_blocks < 1 or self.block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")


@dataclass
class RequestOutput:
    request_id: str
    new_token_ids: list[int]
    token_ids: list[int]
    text: str  # everything so far that is safe to show (see engine.stop.stable_text)
    finished: bool
    finish_reason: str | None
    seed: int
    num_prompt_tokens: int
    num_forwards: int
    modes: dict[str, int]  # forwards per mode
    tokens_by_mode: dict[str, int]
    accepted_by_mode: dict[str, int]
    drafted_by_mode: dict[str, int]
    num_preemptions: int = 0
    error: str | None = None  # set when finish_reason is "error"
    forwards_by_block: dict[str, int] = field(default_factory=dict)  # "mode/block" -> forwards

    @property
    def tokens_per_forward(self) -> float:
        return len(self.token_ids) / max(1, self.num_forwards)


class StepFailed(RuntimeError):
    """The executor failed a step. Every request that was running has been finished with
    finish_reason "error" (`outputs`, one per request) and its KV blocks freed; the engine
    stays usable (a sharded executor rebuilds its workers on the next step)."""

    def __init__(self, message: str, outputs: list[RequestOutput]) -> None:
        super().__init__(message)
        self.outputs = outputs


class LLMEngine:
    def __init__(self, executor: Executor, model_config: ModelConfig, codec: TextCodec | None,
                 config: EngineConfig = EngineConfig(),
                 policy: SchedulingPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """clock: seconds, for token times and the step's wall time (a simulated clock
        makes the engine run in simulated time: engine/simulator.py)."""
        self.executor, self.model_config, self.codec, self.config = (
            executor, model_config, codec, config)
        self.clock = clock
        self.max_model_len, self.context_source = context_limit(model_config,
                                                                config.max_model_len)
        self.pool = BlockPool(config.num_blocks, config.block_size)
        kv = KVCacheManager(self.pool)
        # config.json's ids, and the tokenizer's where config.json has none (special_tokens.py)
        special = codec.special if codec is not None else None
        self.mask_id = model_config.mask_token_id
        if self.mask_id is None and special is not None:
            self.mask_id = special.mask_id
        eos = {model_config.eos_token_id, *(special.eos_ids if special else ())} - {None}
        if not eos:
            raise ValueError("eos_token_id: the checkpoint names no end-of-sequence token")
        ctx = ModeContext(kv, self.mask_id, frozenset(eos))
        modes = {m.mode: m for m in (ARMode(ctx), DiffusionMode(ctx), SpecLinearMode(ctx),
                                     SpecQuadraticMode(ctx))}
        detok = codec.decode if codec is not None else None
        self.scheduler = Scheduler(config.scheduler, kv, modes, ctx, policy, detok)
        self.kv_sizing: KVSizing | None = None  # how num_blocks was chosen, when from memory
        self._ids = itertools.count()
        self.num_steps = 0
        self.last_step_s = 0.0

    @classmethod
    def from_checkpoint(cls, model_dir: str | Path = DEFAULT_MODEL_DIR,
                        config: EngineConfig = EngineConfig(), device: str = "cpu",
                        policy: SchedulingPolicy | None = None, dtype: str = "float32",
                        kv: KVRequest | None = None) -> LLMEngine:
        """dtype: auto, bfloat16, float16 or float32 (models/dtype.py). kv: size the cache
        from memory (engine/kv_sizing.py); None keeps config.num_blocks."""
        dtype = resolve_dtype(dtype, model_dir, device)
        model = fuse_projections(load_checkpoint(model_dir, dtype=DTYPES[dtype], device=device))
        sizing = None
        if kv is not None:
            budget = None
            if device.startswith("cuda") and kv.gpu_memory_utilization and kv.num_blocks is None:
                budget = measure_gpu_budget(model, kv.gpu_memory_utilization,
                                            config.scheduler.max_batch_tokens)
            sizing = size_kv(kv, model.config, config.block_size, DTYPES[dtype], device, 1,
                             budget)
            config = replace(config, num_blocks=sizing.num_blocks)
        executor = ModelExecutor(model, config.num_blocks, config.block_size)
        engine = cls(executor, model.config, TextCodec.load(model_dir), config, policy)
        engine.kv_sizing = sizing
        return engine

    # --- requests ----------------------------------------------------------------------------

    def tokenize(self, prompt: str | Sequence[int], add_special_tokens: bool = True
                 ) -> list[int]:
        """Text as the tokenizer's post-processor encodes it (add_special_tokens=False for a
        rendered chat, which holds its own); token ids as they are."""
        if isinstance(prompt, str):
            if self.codec is None:
                raise ValueError("this engine has no tokenizer: pass token ids")
            return self.codec.encode(prompt, add_special_tokens)
        return list(prompt)

    def add_request(self, prompt: str | Sequence[int], sampling: SamplingParams | None = None,
                    decode: DecodeParams | None = None, request_id: str | None = None,
                    priority: int = 0, slo: SLO | None = None,
                    arrival_time: float | None = None) -> Request:
        """Queue a request (AdmissionError if the policy refuses it). arrival_time: when it
        arrived on the engine's clock, if before now (it waited for the step in flight)."""
        ids = self.tokenize(prompt)
        sampling = sampling or SamplingParams()
        if not ids:
            raise ValueError("prompt: empty after tokenization")
        if len(ids) + sampling.max_tokens > self.max_model_len:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_tokens ({sampling.max_tokens})"
                             f" exceeds the model's context of {self.max_model_len} (set by "
                             f"{self.context_source})")
        vocab = self.model_config.vocab_size
        if any(not 0 <= t < vocab for t in ids):
            raise ValueError(f"prompt: token ids must be in [0, {vocab})")
        decode = decode_for_checkpoint(decode or DecodeParams(), self.mask_id)
        self._check_block_fits(decode)
        req = Request(request_id or f"req-{next(self._ids)}", ids, sampling, decode,
                      arrival_time=self.clock() if arrival_time is None else arrival_time,
                      priority=priority, slo=slo)
        self.scheduler.admit(req)  # AdmissionError if the policy refuses it
        return req

    def _check_block_fits(self, decode: DecodeParams) -> None:
        """A step's work must fit the batch budget, or the request could never run."""
        if decode.mode is not Mode.AUTO and decode.mode not in self.scheduler.modes:
            raise ValueError(f"mode: {decode.mode.value} needs a deployment with a draft pool "
                             "(speculation.placement: disaggregated)")
        if decode.mode is Mode.AUTO or decode.block_length is None:
            return
        need = self.scheduler.modes[decode.mode].work_tokens(decode.block_length)
        budget = self.config.scheduler.max_batch_tokens
        if need > budget:
            raise ValueError(f"block_length: {decode.mode.value} with a block of "
                             f"{decode.block_length} puts {need} tokens in one step, over "
                             f"max_batch_tokens={budget}")

    def abort(self, request_id: str) -> bool:
        return self.scheduler.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    # --- the step loop -------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        start = self.clock()
        plan = self.scheduler.schedule()
        if not plan.works:
            if self.scheduler.running or self.scheduler.waiting:
                raise RuntimeError("nothing could be scheduled: the KV cache is too small "
                                   "for the waiting request")
            return []
        try:
            out = self.executor.step(plan)
        except Exception as err:
            raise self._fail_running(err) from err
        events = self.scheduler.update(plan, out, wall_s=self.clock() - start)
        self.num_steps += 1
        self.last_step_s = out.elapsed_s
        return self._outputs(plan, events)

    def _fail_running(self, err: Exception) -> StepFailed:
        """The cache contents are unknown after a failed step: every running request ends
        with the error, its blocks go back, and no cached prefix is trusted any more."""
        message = str(err) or type(err).__name__
        outs = []
        for req in list(self.scheduler.running):
            self.scheduler.abort(req.id)  # frees its blocks
            req.finish_reason, req.error = "error", message
            outs.append(self.output_of(req, []))
        self.pool.forget_prefixes()
        return StepFailed(f"step failed, {len(outs)} running request(s) ended: {message}", outs)

    def _outputs(self, plan: StepPlan, events: StepEvents) -> list[RequestOutput]:
        now = self.clock()
        outs = []
        finished = {r.id: r for r in events.finished}
        for work in plan.works:
            req = finished.get(work.request_id) or self.scheduler.requests.get(work.request_id)
            if req is None or work.request_id not in events.emitted:
                continue
            new = events.emitted[work.request_id]
            if new:
                if req.stats.first_token_time is None:
                    req.stats.first_token_time = now
                req.stats.token_times.append(now)
            outs.append(self.output_of(req, new))
        return outs

    def output_of(self, req: Request, new: list[int]) -> RequestOutput:
        detok = self.codec.decode if self.codec else (lambda ids: "")
        st = req.stats
        text = final_text(req, detok) if req.is_finished else stable_text(req, detok)
        return RequestOutput(
            req.id, list(new), list(req.output_ids), text, req.is_finished, req.finish_reason,
            req.sampling.seed, len(req.prompt_ids), st.num_forwards, dict(st.forwards_by_mode),
            dict(st.tokens_by_mode), dict(st.accepted_by_mode), dict(st.drafted_by_mode),
            st.num_preemptions, req.error,
            dict(st.forwards_by_block))

    def generate(self, prompts: Sequence[str | Sequence[int]],
                 sampling: SamplingParams | Sequence[SamplingParams] | None = None,
                 decode: DecodeParams | Sequence[DecodeParams] | None = None
                 ) -> list[RequestOutput]:
        """Run prompts to completion together (continuous batching) and return in order."""
        n = len(prompts)
        samplings = sampling if isinstance(sampling, Sequence) else [sampling] * n
        decodes = decode if isinstance(decode, Sequence) else [decode] * n
        reqs = [self.add_request(p, s, d) for p, s, d in zip(prompts, samplings, decodes,
                                                              strict=True)]
        done: dict[str, RequestOutput] = {}
        try:
            while len(done) < n:
                for out in self.step():
                    if out.finished:
                        done[out.request_id] = out
        except StepFailed:
            for req in reqs:  # the ones still waiting
                self.abort(req.id)
            raise
        return [done[r.id] for r in reqs]


def default_engine(model_dir: str | Path = DEFAULT_MODEL_DIR, device: str | None = None,
                   dtype: str = "auto", **config: object) -> LLMEngine:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return LLMEngine.from_checkpoint(model_dir, EngineConfig(**config), device, dtype=dtype)


__all__ = ["DecodeParams", "EngineConfig", "LLMEngine", "Mode", "RequestOutput",
           "SamplingParams", "StepFailed", "default_engine"]
