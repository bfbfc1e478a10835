"""The replica's side of the engine-core process (cluster/engine_core.py).

The replica spawns the core at start and waits for it to load the model. Jobs and aborts go
down a pipe as they come; the core's messages (one per step, for all of this replica's
requests) are read on the replica's event loop when the pipe is readable (`add_reader`, no
thread, no Ray call) and fanned out to the jobs' streams. An abort reaches the core before
its next step, so the request's KV is free by the end of that step. If the core dies, every
open job ends with a 500 and the replica reports itself unhealthy, so Serve replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from cluster import cpu_placement
from cluster.config import TandemConfig
from cluster.engine_core import EngineFactory
from cluster.job import GenerateJob, JobError
from cluster.metrics import ServerMetrics
from cluster.request_state import JobStream
from cluster.stream_router import StreamPacing, StreamRouter
from engine.engine import EngineStats

log = logging.getLogger(__name__)

START_TIMEOUT_S = 600.0


class EngineCoreClient:
    def __init__(self, config: TandemConfig, factory: EngineFactory | None,
                 metrics: ServerMetrics, pacing: StreamPacing | None = None) -> None:
        self.metrics = metrics
        self.router = StreamRouter(metrics, pacing)
        cpus = cpu_placement.core_cpus(config.model.engine_core_cpus, config.model.torch_threads)
        self.proc, self.conn = _spawn()
        if cpus is not None:  # the core pins itself to them; the replica keeps off them
            cpu_placement.keep_off(cpus)
        self.conn.send((config, factory, cpus))  # a factory must be importable (by name)
        if not self.conn.poll(START_TIMEOUT_S):
            raise RuntimeError(f"the engine core did not start in {START_TIMEOUT_S:.0f} s")
        msg = self.conn.recv()
        if msg[0] != "ready":
            raise RuntimeError(f"the engine core failed to start:\n{msg[1]}")
        _, self.max_model_len, self._stats, self.kv_cache = msg
        metrics.observe_engine(self._stats)
        # Jobs sent, not yet answered: (future of the stream, the job, its arrival).
        self._admits: dict[str, tuple[asyncio.Future, GenerateJob, float]] = {}
        self._reader: asyncio.AbstractEventLoop | None = None  # the loop that reads the pipe
        self.is_dead = False
        self.step_cpu_s = 0.0  # CPU time of the core's engine.step() calls, in all

    # --- requests in and out ---------------------------------------------------------------

    async def submit(self, job: GenerateJob) -> JobStream | JobError:
        arrival = time.monotonic()
        self._start_reading()
        if self.is_dead:
            return JobError(503, "the engine core is not running", None, "service_unavailable")
        if job.id in self._admits:
            raise ValueError(f"job id {job.id!r} is already being admitted")
        future = asyncio.get_running_loop().create_future()
        self._admits[job.id] = (future, job, arrival)
        self.conn.send(("add", job))
        return await future

    def abort(self, stream: JobStream) -> None:
        """Stop a job's open requests; the core frees their KV before its next step."""
        self._abort(self.router.close(stream))

    def stats(self) -> EngineStats:
        return self._stats

    def _abort(self, rids: list[str]) -> None:
        if rids and not self.is_dead:
            self.conn.send(("abort", rids))

    # --- the core's messages (event loop, when the pipe is readable) -----------------------

    def _start_reading(self) -> None:
        loop = asyncio.get_running_loop()
        if self._reader is not loop and not self.is_dead:  # Serve has one loop; tests several
            if self._reader is not None and not self._reader.is_closed():
                self._reader.remove_reader(self.conn.fileno())
            loop.add_reader(self.conn.fileno(), self._on_readable)
            self._reader = loop

    def _on_readable(self) -> None:
        try:
            while self.conn.poll():
                self._handle(pickle.loads(self.conn.recv_bytes()))
        except (EOFError, OSError):
            self._core_died()

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "step":
            _, deltas, self._stats, self.step_cpu_s = msg
            self._abort(self.router.dispatch(deltas, time.monotonic()))
        elif kind == "added":
            self._admitted(*msg[1:])
        elif kind == "stats":
            _, self._stats, self.step_cpu_s = msg
        elif kind == "step_error":
            _, message, self._stats = msg
            self.metrics.observe_engine_error("step")
            self._abort(self.router.fail_all(
                JobError(500, f"engine step failed: {message}", None, "server_error")))
        else:
            raise ValueError(f"engine core sent an unknown message {kind!r}")
        self.metrics.observe_engine(self._stats)
        idle = self._stats.num_running == 0 and self._stats.num_waiting == 0
        if kind in ("step", "stats") and idle and self.router.choices:
            self._abort(self.router.fail_all(  # requests the engine no longer knows
                JobError(500, "request lost by the engine", None, "server_error")))

    def _admitted(self, job_id: str, added: list[tuple[str, int]] | JobError) -> None:
        """The core's answer to a job: its streams open here, before any later message
        (the core's next step may already carry their first tokens)."""
        future, job, arrival = self._admits.pop(job_id)
        if isinstance(added, JobError):
            if added.status == 500:
                self.metrics.observe_engine_error("admit")
            self.metrics.observe_rejected(added.status)
            result: JobStream | JobError = added
        else:
            result = self.router.open(job, added, arrival)
        if future.done():  # the caller went away meanwhile: take the job back
            if isinstance(result, JobStream):
                self.abort(result)
        else:
            future.set_result(result)

    def _core_died(self) -> None:
        if self.is_dead:
            return
        self.is_dead = True
        if self._reader is not None:
            self._reader.remove_reader(self.conn.fileno())
        code = self.proc.poll()
        log.error("the engine core exited (code %s): failing every open job", code)
        self.metrics.observe_engine_error("step")
        error = JobError(500, f"the engine core exited (code {code})", None, "server_error")
        self.router.fail_all(error)
        for future, _, _ in self._admits.values():
            if not future.done():
                future.set_result(error)
        self._admits.clear()

    def shutdown(self) -> None:
        if not self.is_dead:
            with contextlib.suppress(OSError):  # already gone
                self.conn.send(("stop",))
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()


def _spawn() -> tuple[subprocess.Popen, Connection]:
    """A fresh interpreter (not fork: CUDA and a Ray worker's threads forbid it; not
    multiprocessing's spawn: it would re-run the Ray worker's main module) holding one end
    of a socket pair; it exits when this end closes."""
    ours, theirs = socket.socketpair()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "cluster.engine_core", str(theirs.fileno())],
                            pass_fds=(theirs.fileno(),), env=env)
    theirs.close()
    return proc, Connection(ours.detach())
