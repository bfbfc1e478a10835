"""The engine as a thread of the model-server replica (tp >= 2, or `engine_core: thread`).

The engine is not thread-safe, so one worker thread owns it: adds, aborts and steps all run
there, in order (a single-thread executor), while the event loop keeps serving Ray calls. A
background task steps the engine while requests exist and fans each step's deltas out to the
jobs' streams (cluster/stream_router.py). Aborts (a client went away) are queued and applied
before the next step, so their KV blocks are free by the time it ends. The engine's Python
shares the replica's GIL with the event loop here; cluster/engine_client.py runs it in a
process of its own instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from cluster.job import GenerateJob, JobError
from cluster.job_admission import add_job
from cluster.metrics import ServerMetrics
from cluster.request_state import JobStream
from cluster.step_delta import StepDelta
from cluster.stream_router import StreamPacing, StreamRouter
from engine.engine import EngineStats, LLMEngine, StepFailed

log = logging.getLogger(__name__)


class AsyncEngineLoop:
    def __init__(self, engine: LLMEngine, metrics: ServerMetrics,
                 pacing: StreamPacing | None = None) -> None:
        self.engine, self.metrics = engine, metrics
        self.max_model_len = engine.max_model_len
        self.kv_cache = engine.kv_sizing.describe() if engine.kv_sizing else None
        self.router = StreamRouter(metrics, pacing)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tandem-engine")
        self._aborts: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.step_cpu_s = 0.0  # CPU time of engine.step() on the engine thread, in all

    # --- requests in and out (event-loop side) ---------------------------------------------

    async def submit(self, job: GenerateJob) -> JobStream | JobError:
        arrival = time.monotonic()
        loop = asyncio.get_running_loop()
        added = await loop.run_in_executor(self._thread, add_job, self.engine, job)
        if isinstance(added, JobError):
            if added.status == 500:
                self.metrics.observe_engine_error("admit")
            self.metrics.observe_rejected(added.status)
            return added
        stream = self.router.open(job, added, arrival)
        self._ensure_running()
        self._wake.set()
        return stream

    def abort(self, stream: JobStream) -> None:
        """Stop a job's open requests; their KV is freed before the next step."""
        self._aborts += self.router.close(stream)
        self._wake.set()

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.router.choices and not self._aborts:
                await self._wake.wait()
                self._wake.clear()
                continue
            aborts, self._aborts = self._aborts, []
            try:
                deltas, has_work = await loop.run_in_executor(self._thread, self._step, aborts)
            except Exception as err:  # keep serving: fail what was running, free its blocks
                log.exception("engine step failed")
                self.metrics.observe_engine_error("step")
                self._aborts += self.router.fail_all(
                    JobError(500, f"engine step failed: {err}", None, "server_error"))
                continue
            self._aborts += self.router.dispatch(deltas, time.monotonic())
            if not has_work and self.router.choices:  # requests the engine no longer knows
                self._aborts += self.router.fail_all(
                    JobError(500, "request lost by the engine", None, "server_error"))

    def _step(self, aborts: list[str]) -> tuple[list[StepDelta], bool]:
        """Engine thread: aborts, one step, gauges."""
        eng = self.engine
        for rid in aborts:
            eng.abort(rid)
        outputs = []
        if eng.has_unfinished():
            cpu = time.thread_time()
            try:
                outputs = eng.step()
            except StepFailed as err:  # the running requests end with "error"; others wait
                log.error("engine step failed: %s", err)
                self.metrics.observe_engine_error("step")
                outputs = err.outputs
            finally:
                self.step_cpu_s += time.thread_time() - cpu
        self.metrics.observe_engine(eng.stats())
        return [StepDelta.of(o) for o in outputs], eng.has_unfinished()

    def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)
        self.engine.shutdown()
