"""A group of tensor-parallel shard-worker actors behind the engine's Executor interface.

The scheduler does not know whether it drives one process (engine.executor.ModelExecutor)
or this group: `step(plan)` sends the plan to every rank at once and returns rank 0's
StepOutput. Ranks live in a placement group, one bundle per rank (STRICT_PACK inside a node
by default, PACK to allow several nodes), either created here or handed in by a Ray Serve
replica that reserved the bundles through `placement_group_bundles`.

Failure: a rank that dies or does not answer within `step_timeout_s` fails the step with a
ShardFailure naming it; the group is then broken, and the next step (or `rebuild()`) starts
fresh actors in the same placement group. Nothing waits without a timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.shard_worker import DTYPES, ShardStats, ShardWorker
from engine.executor import Executor, ExecutorFailure
from engine.plan import StepOutput, StepPlan

STRATEGIES = ("STRICT_PACK", "PACK")
_REMOTE_WORKER = ray.remote(ShardWorker)


@dataclass(frozen=True)
class ShardGroupConfig:
    model_dir: str
    tp: int
    num_blocks: int
    block_size: int = 16
    device: str = "cpu"  # "cpu" (gloo) or "cuda" (nccl, one GPU per rank)
    dtype: str = "float32"
    num_cpus_per_rank: float = 1.0  # CPU bundles only; torch runs this many threads
    strategy: str = "STRICT_PACK"  # PACK lets ranks spread over nodes
    step_timeout_s: float = 120.0
    setup_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise ValueError(f"tp must be >= 1, got {self.tp}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.step_timeout_s <= 0 or self.setup_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")

    def bundles(self) -> list[dict[str, float]]:
        """One bundle per rank: a GPU each on CUDA, num_cpus_per_rank CPUs each on CPU."""
        one = {"GPU": 1.0} if self.device == "cuda" else {"CPU": self.num_cpus_per_rank}
        return [dict(one) for _ in range(self.tp)]


class ShardFailure(ExecutorFailure):
    """A rank died or stalled; `rank` names it (the first culprit when several)."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(f"shard rank {rank}: {message}")
        self.rank = rank


class ShardGroupExecutor(Executor):
    def __init__(self, config: ShardGroupConfig, placement_group: PlacementGroup | None = None,
                 bundle_offset: int = 0) -> None:
        self.config = config
        self._owns_pg = placement_group is None
        self.pg = placement_group
        self.bundle_offset = bundle_offset
        self.workers: list[Any] = []
        self.stats: list[ShardStats] = []
        self.is_broken = False
        self.on_shutdown: list[Any] = []  # callables run after the actors are gone
        try:
            self._start()
        except BaseException:
            self.shutdown()  # no actors or placement group of ours left behind
            raise

    # --- lifecycle -----------------------------------------------------------------------

    def _start(self) -> None:
        cfg = self.config
        if self.pg is None:
            self.pg = placement_group(cfg.bundles(), strategy=cfg.strategy)
        try:
            ray.get(self.pg.ready(), timeout=cfg.setup_timeout_s)
        except GetTimeoutError:
            raise ExecutorFailure(f"placement group {cfg.bundles()} ({cfg.strategy}) not "
                                  f"ready within {cfg.setup_timeout_s:.0f} s: not enough "
                                  "free resources in the cluster") from None
        try:
            self._start_workers()
        except BaseException:
            self._kill_workers()
            raise

    def _start_workers(self) -> None:
        cfg = self.config
        self.workers = [self._spawn(rank) for rank in range(cfg.tp)]
        host, port = self._get([self.workers[0].rendezvous_address.remote()],
                               cfg.setup_timeout_s, "rendezvous")[0]
        self.stats = self._get([w.setup.remote(host, port, cfg.step_timeout_s + 30)
                                for w in self.workers], cfg.setup_timeout_s, "setup")
        self.is_broken = False

    def _spawn(self, rank: int) -> Any:
        """Rank's actor in its bundle, asking for what the bundle holds (a handed-in
        placement group decides the CPUs per rank; a GPU rank takes one GPU)."""
        cfg = self.config
        on_gpu = cfg.device == "cuda"
        index = self.bundle_offset + rank
        specs = self.pg.bundle_specs
        if index >= len(specs):
            raise ValueError(f"rank {rank} needs bundle {index}; the placement group has "
                             f"{len(specs)} (bundle_offset={self.bundle_offset})")
        cpus = specs[index].get("CPU", 0.0 if on_gpu else cfg.num_cpus_per_rank)
        if on_gpu and specs[index].get("GPU", 0) < 1:
            raise ValueError(f"bundle {index} {specs[index]} has no GPU for rank {rank}")
        return _REMOTE_WORKER.options(
            num_cpus=0 if on_gpu else cpus,
            num_gpus=1 if on_gpu else 0,
            max_concurrency=2,  # step() on one thread, progress() answers on the other
            max_restarts=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                self.pg, placement_group_bundle_index=self.bundle_offset + rank),
        ).remote(str(cfg.model_dir), rank, cfg.tp, cfg.num_blocks, cfg.block_size,
                 cfg.device, cfg.dtype, 0 if on_gpu else max(1, int(cpus)))

    def rebuild(self) -> None:
        """Kill every rank and start fresh ones in the same placement group (the KV cache
        contents are lost: the engine fails the requests that were running)."""
        self._kill_workers()
        self._start()

    def shutdown(self) -> None:
        self._kill_workers()
        if self._owns_pg and self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None
        for hook in self.on_shutdown:
            hook()
        self.on_shutdown = []

    def _kill_workers(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers, self.is_broken = [], True

    # --- the step --------------------------------------------------------------------------

    def step(self, plan: StepPlan) -> StepOutput:
        return self.collect(self.submit(plan))

    def submit(self, plan: StepPlan) -> list:
        """Start the step on every rank and return at once (collect() waits for it), so
        that a caller can run another group's step meanwhile."""
        if self.is_broken:
            self.rebuild()
        plan_ref = ray.put(plan)  # serialized once, read by every rank
        return [w.step.remote(plan_ref) for w in self.workers]

    def collect(self, refs: list) -> StepOutput:
        out = self._get(refs, self.config.step_timeout_s, "step")[0]
        assert isinstance(out, StepOutput)
        return out

    def logits(self, chunks: list) -> Any:  # noqa: ANN401 - torch.Tensor [T, V]
        """Rank 0's float32 logits of chunks without the KV cache (tests and checks)."""
        refs = [w.logits.remote(chunks) for w in self.workers]
        return self._get(refs, self.config.step_timeout_s, "logits")[0]

    def _get(self, refs: list, timeout_s: float, what: str) -> list:
        """Results of one call per rank, or ShardFailure naming the rank that failed."""
        deadline = time.monotonic() + timeout_s
        pending, results = list(refs), [None] * len(refs)
        while pending:
            left = deadline - time.monotonic()
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, left))
            if not ready:
                self.is_broken = True
                raise self._stalled(refs, pending, what, timeout_s)
            rank = refs.index(ready[0])
            try:
                results[rank] = ray.get(ready[0])
            except RayError as err:
                self.is_broken = True
                raise self._failed(refs, rank, err, what) from None
        return results

    def _failed(self, refs: list, rank: int, err: RayError, what: str) -> ShardFailure:
        """A rank's call raised. When it is a rank whose peer died (its collective broke),
        name the dead actor instead: give the others a moment to report."""
        if not isinstance(err, RayActorError):
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=2.0)
            for i, ref in enumerate(refs):
                if ref in ready and _actor_died(ref):
                    return ShardFailure(i, f"actor died during {what}")
            return ShardFailure(rank, f"{what} raised: {_summary(err)}")
        return ShardFailure(rank, f"actor died during {what} ({type(err).__name__})")

    def _stalled(self, refs: list, pending: list, what: str, timeout_s: float) -> ShardFailure:
        """Name the pending rank furthest behind: ranks waiting inside an all-reduce have
        entered more collectives this step than the one that hangs."""
        late = [refs.index(p) for p in pending]
        probes = {r: self.workers[r].progress.remote() for r in late}
        ready, _ = ray.wait(list(probes.values()), num_returns=len(probes), timeout=2.0)
        seen = {}
        for r, ref in probes.items():
            if ref not in ready:
                return ShardFailure(r, f"no {what} result within {timeout_s:.1f} s and no "
                                       "answer to a progress probe (process hung)")
            try:
                seen[r] = ray.get(ref)
            except RayError:
                return ShardFailure(r, f"actor died during {what}")
        worst = min(late, key=lambda r: (seen[r].num_collectives, r))
        where = ", ".join(f"rank {r} at all-reduce {seen[r].num_collectives}" for r in late)
        return ShardFailure(worst, f"no {what} result within {timeout_s:.1f} s ({where})")


def _actor_died(ref: Any) -> bool:  # noqa: ANN401
    try:
        ray.get(ref, timeout=0)
    except RayActorError:
        return True
    except Exception:  # noqa: BLE001 - any other outcome means the actor lived
        return False
    return False


def _summary(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
