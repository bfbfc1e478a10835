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
from engine.logprobs import LogprobScorer, ScoreRequest, TokenLogprob
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
from engine.request_error import RequestError
from engine.scheduler import Scheduler, SchedulerConfig, StepEvents
from models.checkpoint import DEFAULT_MODEL_DIR, load_checkpoint
from models.config import ModelConfig
from models.dtype import DTYPES, resolve_dtype
from models.fuse import fuse_projections
from models.tokenizer import TextCodec
from policies.modes import max_work_tokens
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
    text: str  # the whole text, on the request's last output ("" before: see delta_text)
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
    delta_text: str = ""  # text this step made safe to show (no partial character, no
    #                       tail that may still grow into a stop string)
    logprobs: list[TokenLogprob] | None = None  # one per new token, if the request asked
    scheduled_time: float | None = None  # time.monotonic() of the first step that ran it

    @property
    def tokens_per_forward(self) -> float:
        return len(self.token_ids) / max(1, self.num_forwards)


@dataclass(frozen=True)
class EngineStats:
    """What a server shows of its engine (health, gauges, autoscaling)."""

    num_running: int
    num_waiting: int
    kv_free_blocks: int
    kv_blocks: int
    num_steps: int
    last_step_s: float

    def __post_init__(self) -> None:
        if not 0 <= self.kv_free_blocks <= self.kv_blocks:
            raise ValueError(f"{self.kv_free_blocks} free of {self.kv_blocks} KV blocks")


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
        self._detok = detok or (lambda ids: "")  # for logprob entries' token strings
        self._logprob_ids: set[str] = set()  # requests that asked for logprobs
        self._step_start = 0.0

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
                raise RequestError("prompt", "this engine has no tokenizer: pass the prompt as "
                                             "token ids")
            return self.codec.encode(prompt, add_special_tokens)
        return list(prompt)

    def check(self, prompt_ids: Sequence[int], sampling: SamplingParams,
              decode: DecodeParams) -> None:
        """Raise RequestError (naming the field) if this request could never run here."""
        n, limit = len(prompt_ids), self.max_model_len
        if not n:
            raise RequestError("prompt", "the prompt is empty after tokenization")
        if n >= limit:
            raise RequestError("prompt", f"the prompt has {n} tokens; the model's context "
                                         f"is {limit}")
        if n + sampling.max_tokens > limit:
            raise RequestError("max_tokens", f"prompt ({n} tokens) + max_tokens "
                                             f"({sampling.max_tokens}) exceeds the model's "
                                             f"context of {limit} (set by "
                                             f"{self.context_source})")
        vocab = self.model_config.vocab_size
        if any(not 0 <= t < vocab for t in prompt_ids):
            raise RequestError("prompt", f"prompt token ids must be in [0, {vocab})")
        self._check_block_fits(decode)
        # Room for the whole sequence, plus one step's work beyond it (auto: any mode's).
        step = max_work_tokens(decode.mode, decode.block_length)
        need = self.pool.blocks_for(n + sampling.max_tokens + step)
        if need > self.pool.num_blocks:
            raise RequestError("max_tokens", f"the prompt and max_tokens need {need} KV "
                                             f"blocks; this server has {self.pool.num_blocks}")

    def add_request(self, prompt: str | Sequence[int], sampling: SamplingParams | None = None,
                    decode: DecodeParams | None = None, request_id: str | None = None,
                    priority: int = 0, slo: SLO | None = None,
                    arrival_time: float | None = None, logprobs: bool = False) -> Request:
        """Check and queue a request. Raises RequestError (a field at fault) or the policy's
        AdmissionError (refused for load). arrival_time: when it arrived on the engine's
        clock, if before now (it waited for the step in flight). With logprobs, each output
        carries the log-probability of every new token (engine/logprobs.py)."""
        ids = self.tokenize(prompt)
        sampling = sampling or SamplingParams()
        decode = decode_for_checkpoint(decode or DecodeParams(), self.mask_id)
        self.check(ids, sampling, decode)
        req = Request(request_id or f"req-{next(self._ids)}", ids, sampling, decode,
                      arrival_time=self.clock() if arrival_time is None else arrival_time,
                      priority=priority, slo=slo)
        self.scheduler.admit(req)  # AdmissionError if the policy refuses it
        if logprobs:
            self._logprob_ids.add(req.id)
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
            raise RequestError("block_length", f"{decode.mode.value} with block_length "
                                               f"{decode.block_length} puts {need} tokens in "
                                               f"one step, over max_batch_tokens={budget}")

    def abort(self, request_id: str) -> bool:
        self._logprob_ids.discard(request_id)
        return self.scheduler.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    def shutdown(self) -> None:
        self.executor.shutdown()

    def stats(self) -> EngineStats:
        sched = self.scheduler
        return EngineStats(len(sched.running), len(sched.waiting), self.pool.num_free,
                           self.pool.num_blocks, self.num_steps, self.last_step_s)

    # --- the step loop -------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        self._step_start = start = self.clock()
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
        return self._with_logprobs(self._outputs(plan, events))

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

    def _outputs(self, plan: StepPlan, events: StepEvents
                 ) -> list[tuple[Request, RequestOutput]]:
        now = self.clock()
        outs = []
        finished = {r.id: r for r in events.finished}
        for work in plan.works:
            req = finished.get(work.request_id) or self.scheduler.requests.get(work.request_id)
            if req is None or work.request_id not in events.emitted:
                continue
            new = events.emitted[work.request_id]
            if req.stats.first_scheduled_time is None:
                req.stats.first_scheduled_time = self._step_start
            if new:
                if req.stats.first_token_time is None:
                    req.stats.first_token_time = now
                req.stats.token_times.append(now)
            outs.append((req, self.output_of(req, new)))
        return outs

    def output_of(self, req: Request, new: list[int]) -> RequestOutput:
        st, detok = req.stats, req.detokenizer
        return RequestOutput(
            req.id, list(new), list(req.output_ids),
            detok.text if detok and req.is_finished else "", req.is_finished,
            req.finish_reason, req.sampling.seed, len(req.prompt_ids), st.num_forwards,
            dict(st.forwards_by_mode), dict(st.tokens_by_mode), dict(st.accepted_by_mode),
            dict(st.drafted_by_mode), st.num_preemptions, req.error,
            dict(st.forwards_by_block), delta_text=detok.take_delta() if detok else "",
            scheduled_time=st.first_scheduled_time)

    def _with_logprobs(self, outs: list[tuple[Request, RequestOutput]]
                       ) -> list[RequestOutput]:
        """Score the new tokens of the requests that asked, in one extra pass that reads
        each one's KV cache (a finished request's blocks are gone: a full pass)."""
        asks: list[tuple[RequestOutput, ScoreRequest]] = []
        for req, out in outs:
            if req.id not in self._logprob_ids:
                continue
            if req.is_finished:
                self._logprob_ids.discard(req.id)
            if not out.new_token_ids:
                out.logprobs = []
                continue
            first = req.num_tokens - len(out.new_token_ids)
            cache = req.cache if not req.is_finished else None
            asks.append((out, ScoreRequest(req.all_ids, first) if cache is None else
                         ScoreRequest(req.all_ids, first, cache.num_cached,
                                      list(cache.block_table))))
        scorer = LogprobScorer(self.executor, self._detok)  # the executor of now (a
        for (out, _), scored in zip(asks, scorer.score([a for _, a in asks]),  # wrapper's)
                                    strict=True):
            out.logprobs = scored
        return [out for _, out in outs]

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
