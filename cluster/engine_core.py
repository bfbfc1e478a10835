"""The engine core: a process of its own next to the model-server replica (vLLM V1's split),
so that the step loop never waits on the replica's event loop or GIL.

It runs free: between steps it drains its input pipe (jobs to add, requests to abort), then
steps while there is work, and sends one message per step with every request's StepDelta
(cluster/step_delta.py) and the engine's stats. Messages are pickled here and written by a
sender thread (the write releases the GIL), so a replica that is slow to read never stalls
the loop, and the two sides can never block on each other's full pipe.

Messages in:  ("add", job) | ("abort", [request ids]) | ("stop",)
Messages out: ("ready", max_model_len, stats, KV sizing) | ("failed", traceback) at start;
              ("added", job id, [(request id, prompt tokens)] | JobError);
              ("step", [StepDelta], stats, step CPU s) | ("step_error", message, stats);
              ("stats", stats, step CPU s) after inputs that changed the idle engine.
Step CPU s: the CPU time engine.step() has taken on this process's main thread in all (the
engine's own work: what `tandem bench serve` leaves out of the serving stack's CPU).
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from cluster import cpu_placement
from cluster.admission_gate import AdmissionGate, GateConfig
from cluster.config import TandemConfig
from cluster.job import GenerateJob
from cluster.job_admission import add_job
from cluster.step_delta import StepDelta
from engine.engine import LLMEngine, StepFailed

log = logging.getLogger(__name__)

EngineFactory = Callable[[TandemConfig], LLMEngine]


def run_engine_core(conn: Connection) -> None:
    """The child process's entry point: (config, engine factory or None, the CPUs to run on
    or None) come first."""
    config, factory, cpus = conn.recv()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s engine-core "
                        "%(name)s: %(message)s")
    try:
        sender_cpus = place_engine_core(config, cpus)
        if config.model.torch_threads:
            import torch

            torch.set_num_threads(config.model.torch_threads)
        if factory is None:
            from cluster.model_server import build_engine as factory
        engine = factory(config)
    except Exception:
        conn.send(("failed", traceback.format_exc()))
        raise
    EngineCore(engine, conn, GateConfig(config.model.admit_hold_steps), sender_cpus).run()


def place_engine_core(config: TandemConfig, cpus: set[int] | None) -> set[int] | None:
    """Before the engine is built (threads started later inherit it): this process's CPUs
    (the replica resolved `model.engine_core_cpus` to them) and niceness
    (cluster/cpu_placement.py). Returns the CPUs for the sender thread: the others, if any
    (beside the step loop, its every wake-up would preempt it: most of the pinned core's
    preemptions in a `perf sched` trace, BENCHMARKS.md > Serving, ninth session)."""
    sender = None
    if cpus is not None:
        sender = (os.sched_getaffinity(0) - cpus) or None
        cpu_placement.pin_to(cpus)
    if config.model.engine_core_nice is not None:
        cpu_placement.set_nice(config.model.engine_core_nice)
    return sender


class EngineCore:
    def __init__(self, engine: LLMEngine, conn: Connection, gate: GateConfig | None = None,
                 sender_cpus: set[int] | None = None) -> None:
        self.engine, self.conn = engine, conn
        self._sender_cpus = sender_cpus  # None: where the step loop runs
        self.gate = AdmissionGate(gate or GateConfig())
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._open: set[str] = set()  # request ids added and not finished
        self.step_cpu_s = 0.0  # CPU time inside engine.step(), in all
        self._sender = threading.Thread(target=self._send_loop, name="engine-core-send",
                                        daemon=True)

    def run(self) -> None:
        self._sender.start()
        kv = self.engine.kv_sizing.describe() if self.engine.kv_sizing else None
        self._send(("ready", self.engine.max_model_len, self.engine.stats(), kv))
        try:
            while True:
                applied = self._drain(block=not self.engine.has_unfinished()
                                      and not self.gate.num_held)
                if applied is None:
                    return
                self._admit(self.gate.due(len(self._open), self.engine.num_steps))
                if self.engine.has_unfinished():
                    self._step()
                elif applied:  # aborts on an idle engine: show the freed KV
                    self._send(("stats", self.engine.stats(), self.step_cpu_s))
        except EOFError:  # the replica is gone
            return
        finally:
            self._out.put(None)
            self._sender.join(timeout=5)
            self.engine.shutdown()

    def _drain(self, block: bool) -> int | None:
        """Apply every message waiting (wait for one if block): how many; None: stop."""
        num = 0
        while block or self.conn.poll():
            block = False
            if not self._apply(self.conn.recv()):
                return None
            num += 1
        return num

    def _apply(self, msg: tuple[Any, ...]) -> bool:
        kind = msg[0]
        if kind == "add":
            self._admit(self.gate.offer(msg[1], len(self._open), self.engine.num_steps))
        elif kind == "abort":
            if self.gate.holds_any(msg[1]):  # admitted first, so the client hears "added"
                self._admit(self.gate.release())
            for rid in msg[1]:
                self.engine.abort(rid)
                self._open.discard(rid)
        elif kind == "stop":
            return False
        else:
            raise ValueError(f"engine core: unknown message {kind!r}")
        return True

    def _admit(self, jobs: list[GenerateJob]) -> None:
        for job in jobs:
            added = add_job(self.engine, job)
            if isinstance(added, list):
                self._open.update(rid for rid, _ in added)
            self._send(("added", job.id, added))

    def _step(self) -> None:
        cpu = time.thread_time()
        try:
            outputs = self.engine.step()
        except StepFailed as err:  # the running requests end with "error"; others wait
            log.error("engine step failed: %s", err)
            outputs = err.outputs
        except Exception as err:  # a bug (a broken policy, say): loud; every open job ends
            log.exception("engine step failed")  # with a 500 (the replica fails them)
            for rid in self._open:
                self.engine.abort(rid)
            self._open.clear()
            self._send(("step_error", f"{type(err).__name__}: {err}", self.engine.stats()))
            return
        finally:
            self.step_cpu_s += time.thread_time() - cpu
        self._open.difference_update(o.request_id for o in outputs if o.finished)
        self._send(("step", [StepDelta.of(o) for o in outputs], self.engine.stats(),
                    self.step_cpu_s))

    def _send(self, msg: tuple[Any, ...]) -> None:
        self._out.put(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    def _send_loop(self) -> None:
        if self._sender_cpus:
            cpu_placement.pin_thread(self._sender_cpus)
        while (payload := self._out.get()) is not None:
            try:
                self.conn.send_bytes(payload)
            except (BrokenPipeError, ConnectionResetError, OSError):
                return  # the replica is gone; the main loop sees EOF


if __name__ == "__main__":  # started by cluster/engine_client.py with its socket's fd
    run_engine_core(Connection(int(sys.argv[1])))
