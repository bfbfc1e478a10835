"""Two pools behind one Executor: a verify pool (owns the committed KV, runs prefill, verify
and AR chunks) and one or more draft pool replicas (run draft chunks against their own
copy of each request's context). A step's plan is split by work type
(engine/draft_plan.py), both pools run at once, and the results come back in plan order.

The pools are shard groups (actors/shard_group.py, any tp, any dtype each) or, in tests,
in-process executors (run one after the other). Faults:
- a draft replica that dies or stalls: its works of this step come back `draft_failed`, its
  generation is bumped (the pipelined mode degrades the requests it held to AR on the
  verify pool) and it is rebuilt in a background thread while the verify pool goes on;
- a verify pool failure fails the step (ShardFailure naming the rank): the engine ends the
  running requests with that error and the group is rebuilt on the next step.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from engine.draft_plan import DraftWork, PipelinedResult, PipelinedWork
from engine.executor import Executor, ExecutorFailure
from engine.plan import ChunkWork, StepOutput, StepPlan, WorkResult


@dataclass
class PoolStats:
    """One pool's forwards and the time it spent in them (rank 0's own forward time)."""

    num_forwards: int = 0
    num_tokens: int = 0
    busy_s: float = 0.0
    num_failures: int = 0
    num_rebuilds: int = 0

    def add(self, plan: StepPlan, out: StepOutput) -> None:
        self.num_forwards += 1
        self.num_tokens += plan.num_tokens
        self.busy_s += out.elapsed_s


@dataclass
class _DraftReplica:
    executor: Executor
    generation: int = 0
    rebuilding: threading.Thread | None = None
    rebuild_error: BaseException | None = None
    stats: PoolStats = field(default_factory=PoolStats)


class SpeculationPools(Executor):
    def __init__(self, verify: Executor, drafts: list[Executor]) -> None:
        if not drafts:
            raise ValueError("at least one draft pool replica")
        self.verify = verify
        self.verify_stats = PoolStats()
        self.replicas = [_DraftReplica(d) for d in drafts]
        self.wall_s = 0.0  # time inside step(), both pools together
        # Set to a list to record (verify tokens, verify works, draft tokens, draft works)
        # per step (bench/disagg.py replays them through a GPU cost model).
        self.step_log: list[tuple[int, int, int, int]] | None = None
        self.on_shutdown: list[Any] = []

    # --- DraftPoolView ---------------------------------------------------------------------

    @property
    def num_draft_replicas(self) -> int:
        return len(self.replicas)

    def is_draft_ready(self, replica: int) -> bool:
        rep = self.replicas[replica]
        return rep.rebuilding is None and rep.rebuild_error is None

    def draft_generation(self, replica: int) -> int:
        return self.replicas[replica].generation

    def draft_stats(self) -> PoolStats:
        """All draft replicas together."""
        total = PoolStats()
        for rep in self.replicas:
            for name in ("num_forwards", "num_tokens", "busy_s", "num_failures",
                         "num_rebuilds"):
                setattr(total, name, getattr(total, name) + getattr(rep.stats, name))
        return total

    # --- the step ---------------------------------------------------------------------------

    def step(self, plan: StepPlan) -> StepOutput:
        start = time.perf_counter()
        verify_works: list[ChunkWork] = []
        jobs: dict[int, list[tuple[int, DraftWork]]] = defaultdict(list)
        for i, work in enumerate(plan.works):
            if isinstance(work, DraftWork):
                jobs[work.replica].append((i, work))
                continue
            verify_works.append(work)
            if isinstance(work, PipelinedWork) and work.draft is not None:
                jobs[work.draft.replica].append((i, work.draft))
        draft_plans = {r: StepPlan([w for _, w in js]) for r, js in jobs.items()}
        pending = {r: _submit(self.replicas[r].executor, p) for r, p in draft_plans.items()}
        verify_plan = StepPlan(verify_works)
        verify_pending = _submit(self.verify, verify_plan) if verify_works else None
        try:
            verify_out = _collect(self.verify, verify_pending) if verify_pending else None
        finally:  # a failed verify step still waits for its drafts: no step left running
            drafts = {r: self._collect_draft(r, draft_plans[r], h) for r, h in pending.items()}
        if verify_out is not None:
            self.verify_stats.add(verify_plan, verify_out)
        results = self._merge(plan, verify_out, jobs, drafts)
        if self.step_log is not None:
            draft_works = [w for p in draft_plans.values() for w in p.works]
            self.step_log.append((verify_plan.num_tokens, len(verify_works),
                                  sum(w.num_tokens for w in draft_works), len(draft_works)))
        elapsed = time.perf_counter() - start
        self.wall_s += elapsed
        return StepOutput(results, elapsed)

    def _collect_draft(self, replica: int, plan: StepPlan, handle: Any  # noqa: ANN401
                       ) -> list[WorkResult] | None:
        rep = self.replicas[replica]
        try:
            out = _collect(rep.executor, handle)
        except ExecutorFailure as err:
            rep.stats.num_failures += 1
            self._lose(replica, err)
            return None
        rep.stats.add(plan, out)
        return out.results

    def _merge(self, plan: StepPlan, verify_out: StepOutput | None,
               jobs: dict[int, list[tuple[int, DraftWork]]],
               drafts: dict[int, list[WorkResult] | None]) -> list[WorkResult]:
        draft_of: dict[int, WorkResult | None] = {}
        for r, js in jobs.items():
            outs = drafts[r]
            for k, (i, _) in enumerate(js):
                draft_of[i] = None if outs is None else outs[k]
        verify_results = iter(verify_out.results if verify_out else [])
        results: list[WorkResult] = []
        for i, work in enumerate(plan.works):
            if isinstance(work, DraftWork):
                got = draft_of[i]
                results.append(PipelinedResult.of(got, got, failed=got is None))
                continue
            result = next(verify_results)
            if i in draft_of:
                got = draft_of[i]
                result = PipelinedResult.of(result, got, failed=got is None)
            results.append(result)
        return results

    # --- faults ----------------------------------------------------------------------------

    def _lose(self, replica: int, err: ExecutorFailure) -> None:
        """The replica's cache is gone: bump its generation and rebuild it off the step loop."""
        rep = self.replicas[replica]
        rep.generation += 1
        rebuild = getattr(rep.executor, "rebuild", None)
        if rebuild is None:
            return  # an in-process pool keeps running
        rep.rebuilding = threading.Thread(target=self._rebuild, args=(replica, rebuild),
                                          name=f"draft-rebuild-{replica}", daemon=True)
        rep.rebuilding.start()

    def _rebuild(self, replica: int, rebuild: Any) -> None:  # noqa: ANN401
        rep = self.replicas[replica]
        try:
            rebuild()
            rep.stats.num_rebuilds += 1
        except BaseException as err:  # noqa: BLE001 - kept and shown: the replica stays down
            rep.rebuild_error = err
        finally:
            rep.rebuilding = None

    def wait_draft_ready(self, timeout_s: float) -> bool:
        """Tests and benchmarks: wait for running rebuilds; True when every replica is up."""
        deadline = time.monotonic() + timeout_s
        for rep in self.replicas:
            thread = rep.rebuilding
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        return all(self.is_draft_ready(r) for r in range(len(self.replicas)))

    def shutdown(self) -> None:
        for rep in self.replicas:
            if rep.rebuilding is not None:
                rep.rebuilding.join()
            rep.executor.shutdown()
        self.verify.shutdown()
        for hook in self.on_shutdown:
            hook()
        self.on_shutdown = []


def _submit(executor: Executor, plan: StepPlan) -> Any:  # noqa: ANN401
    """Start the step: a shard group returns at once (its actors run it); an in-process
    executor runs it here and now."""
    submit = getattr(executor, "submit", None)
    if submit is not None:
        return submit(plan)
    try:
        return executor.step(plan)
    except ExecutorFailure as err:
        return err  # raised again by _collect, where a failure is expected


def _collect(executor: Executor, handle: Any) -> StepOutput:  # noqa: ANN401
    if isinstance(handle, ExecutorFailure):
        raise handle
    if isinstance(handle, StepOutput):
        return handle
    return executor.collect(handle)  # type: ignore[attr-defined]
