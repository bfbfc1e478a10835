"""The async engine loop of one model-server replica.

The engine is not thread-safe, so one worker thread owns it: adds, aborts, steps and the
logprob passes all run there, in order (a single-thread executor), while the event loop keeps
serving Ray calls. A background task steps the engine while requests exist and fans each
step's outputs out to per-job asyncio queues. Aborts (a client went away) are queued and
applied before the next step, so their KV blocks are free by the time it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cluster.job import ChoiceEvent, GenerateJob, JobError, TokenLogprob
from cluster.logprobs import LogprobScorer, ScoreRequest
from cluster.metrics import ServerMetrics
from cluster.request_state import ChoiceState, JobStream
from cluster.slo import engine_slo
from engine.engine import LLMEngine, RequestOutput, StepFailed
from engine.policy import AdmissionError
from engine.request import Status
from policies.modes import max_work_tokens

log = logging.getLogger(__name__)


class Refused(Exception):
    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class StepResult:
    outputs: list[RequestOutput] = field(default_factory=list)
    logprobs: dict[str, list[TokenLogprob]] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # request id -> first step start
    has_work: bool = False
    end: float = 0.0


class AsyncEngineLoop:
    def __init__(self, engine: LLMEngine, metrics: ServerMetrics) -> None:
        self.engine, self.metrics = engine, metrics
        self.scorer = LogprobScorer(engine.executor, engine.codec.decode if engine.codec
                                    else lambda ids: "")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tandem-engine")
        self._choices: dict[str, ChoiceState] = {}  # open engine requests by id
        self._aborts: list[str] = []
        # Engine-thread state (only ever touched there, so never racing a registration):
        self._unstarted: set[str] = set()  # added, not yet run by a step
        self._logprob_prompts: dict[str, list[int]] = {}  # prompt ids of requests that ask
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    # --- requests in and out (event-loop side) ---------------------------------------------

    async def submit(self, job: GenerateJob) -> JobStream | JobError:
        arrival = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            added = await loop.run_in_executor(self._thread, self._add_job, job)
        except Refused as err:
            self.metrics.observe_rejected(err.error.status)
            return err.error
        stream = JobStream(job, arrival)
        for spec, (rid, ids) in zip(job.choices, added, strict=True):
            choice = ChoiceState(stream, spec.index, rid, ids, arrival)
            stream.choices[rid] = choice
            self._choices[rid] = choice
        self._ensure_running()
        self._wake.set()
        return stream

    def abort(self, stream: JobStream) -> None:
        """Stop a job's open requests; their KV is freed before the next step."""
        num = len(self._aborts)
        for rid, choice in stream.choices.items():
            if not choice.is_finished and self._choices.pop(rid, None) is not None:
                self._aborts.append(rid)
        self.metrics.observe_aborted(len(self._aborts) - num)
        stream.num_open = 0
        self._wake.set()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._choices and not self._aborts:
                await self._wake.wait()
                self._wake.clear()
                continue
            aborts, self._aborts = self._aborts, []
            try:
                result = await loop.run_in_executor(self._thread, self._step, aborts)
            except Exception as err:  # keep serving: fail what was running, free its blocks
                log.exception("engine step failed")
                self._fail_all(JobError(500, f"engine step failed: {err}", None, "server_error"))
                continue
            self._dispatch(result)

    def _step(self, aborts: list[str]) -> StepResult:
        """Engine thread: aborts, one step, logprobs for what it emitted, gauges."""
        eng = self.engine
        for rid in aborts:
            eng.abort(rid)
            self._unstarted.discard(rid)
            self._logprob_prompts.pop(rid, None)
        res = StepResult()
        if eng.has_unfinished():
            start = time.monotonic()
            try:
                res.outputs = eng.step()
            except StepFailed as err:  # the running requests end with "error"; others wait
                log.error("engine step failed: %s", err)
                res.outputs = err.outputs
            self._note_started(res, start)
            res.logprobs = self._score(res.outputs)
        res.end = time.monotonic()
        res.has_work = eng.has_unfinished()
        sched = eng.scheduler
        self.metrics.observe_engine(len(sched.running), len(sched.waiting), eng.pool.num_free,
                                    eng.pool.num_blocks)
        return res

    def _note_started(self, res: StepResult, start: float) -> None:
        for rid in list(self._unstarted):
            req = self.engine.scheduler.requests.get(rid)
            if req is None or req.status is not Status.WAITING:
                res.started[rid] = start
                self._unstarted.discard(rid)

    def _score(self, outputs: list[RequestOutput]) -> dict[str, list[TokenLogprob]]:
        asks = []
        for out in outputs:
            prompt = self._logprob_prompts.get(out.request_id)
            if out.finished:
                self._logprob_prompts.pop(out.request_id, None)
            if prompt is None or not out.new_token_ids:
                continue
            ids = prompt + out.token_ids
            first = len(ids) - len(out.new_token_ids)
            req = None if out.finished else self.engine.scheduler.requests.get(out.request_id)
            if req is None:  # finished: its blocks are released, score without a cache
                asks.append((out.request_id, ScoreRequest(ids, first)))
            else:
                cache = req.cache
                asks.append((out.request_id, ScoreRequest(ids, first, cache.num_cached,
                                                          list(cache.block_table))))
        scored = self.scorer.score([a for _, a in asks])
        return {rid: s for (rid, _), s in zip(asks, scored, strict=True)}

    def _dispatch(self, res: StepResult) -> None:
        for rid, t in res.started.items():
            choice = self._choices.get(rid)
            if choice is not None and choice.started is None:
                choice.started = t
                self.metrics.observe_queue(t - choice.arrival)
        batches: dict[int, tuple[JobStream, list[ChoiceEvent]]] = {}
        failed: dict[int, tuple[JobStream, str]] = {}
        for out in res.outputs:
            choice = self._choices.get(out.request_id)
            if choice is None:
                continue  # aborted while the step ran
            if out.finish_reason == "error":
                del self._choices[out.request_id]
                choice.is_finished = True
                failed[id(choice.stream)] = (choice.stream, out.error or "step failed")
                continue
            event = choice.advance(out, res.logprobs.get(out.request_id), res.end, self.metrics)
            if out.finished:
                del self._choices[out.request_id]
            batches.setdefault(id(choice.stream), (choice.stream, []))[1].append(event)
        for stream, events in batches.values():
            stream.put(events)
        for stream, message in failed.values():  # its other choices stop too
            self.abort(stream)
            stream.put(JobError(500, f"engine step failed: {message}", None, "server_error"))
        if not res.has_work and self._choices:  # requests the engine no longer knows
            self._fail_all(JobError(500, "request lost by the engine", None, "server_error"))

    def _fail_all(self, error: JobError) -> None:
        streams = {id(c.stream): c.stream for c in self._choices.values()}
        self._aborts.extend(self._choices)
        self._choices.clear()
        for stream in streams.values():
            stream.num_open = 0
            stream.put(error)

    # --- engine thread: admission ----------------------------------------------------------

    def _add_job(self, job: GenerateJob) -> list[tuple[str, list[int]]]:
        added: list[tuple[str, list[int]]] = []
        try:
            for spec in job.choices:
                ids = self.engine.tokenize(spec.prompt, job.add_special_tokens)
                self._check(job, ids, spec.sampling.max_tokens)
                rid = f"{job.id}-{spec.index}"
                self.engine.add_request(ids, spec.sampling, job.decode, request_id=rid,
                                        priority=job.priority, slo=engine_slo(job.slo))
                added.append((rid, ids))
                self._unstarted.add(rid)
                if job.logprobs is not None:
                    self._logprob_prompts[rid] = ids
        except (Refused, ValueError, AdmissionError) as err:
            for rid, _ in added:
                self.engine.abort(rid)
                self._unstarted.discard(rid)
                self._logprob_prompts.pop(rid, None)
            raise Refused(self._as_job_error(job, err)) from None
        return added

    def _check(self, job: GenerateJob, ids: list[int], max_tokens: int) -> None:
        field_ = job.prompt_field
        limit = self.engine.max_model_len
        if not ids:
            raise Refused(JobError(400, f"{field_}: empty after tokenization", field_))
        if len(ids) >= limit:
            raise Refused(JobError(400, f"{field_}: {len(ids)} tokens, the model's context is "
                                        f"{limit}", field_))
        if len(ids) + max_tokens > limit:
            raise Refused(JobError(400, f"max_tokens: {len(ids)} prompt tokens + {max_tokens} "
                                        f"exceed the model's context of {limit}", "max_tokens"))
        pool = self.engine.pool
        step = max_work_tokens(job.decode.mode, job.decode.block_length)  # auto: any mode
        need = pool.blocks_for(len(ids) + max_tokens + step)
        if need > pool.num_blocks:
            raise Refused(JobError(400, f"max_tokens: the request needs {need} KV blocks, this "
                                        f"server has {pool.num_blocks}", "max_tokens"))

    @staticmethod
    def _as_job_error(job: GenerateJob, err: Exception) -> JobError:
        if isinstance(err, Refused):
            return err.error
        if isinstance(err, AdmissionError) and err.status == 503:
            # Infeasible even alone on this server: the request's SLO is at fault, not the
            # load, and a retry cannot help (issue 16: hostile input gets a 4xx, no 5xx).
            return JobError(400, f"slo: {err.reason}", "slo")
        if isinstance(err, AdmissionError):
            kind = "rate_limit_error" if err.status == 429 else "service_unavailable"
            return JobError(err.status, err.reason, None, kind)
        msg = str(err)
        param = msg.split(":", 1)[0] if msg.split(":", 1)[0].isidentifier() else None
        if param == "prompt":
            param = job.prompt_field
        return JobError(400, msg, param)

    def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)
