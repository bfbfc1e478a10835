"""The model-server deployment: one replica owns one engine (the scheduler and the KV
bookkeeping) and streams each job's events back to its caller.

At tp = 1 the engine runs in an engine-core process beside the replica (cluster/engine_core.py:
a free-running step loop, one message per step for all requests, no Ray call per step), so
it never waits on the replica's event loop or GIL. At tp >= 2 (or `engine_core: thread`) it
runs in a thread of the replica (cluster/engine_loop.py) and drives a group of shard actors
placed in the replica's own placement group (bundle 0 is the replica, bundles 1..tp the
ranks; see TandemConfig.placement_bundles). The class is plain Python (Serve wraps it in
cluster/app.py) and takes an engine factory, so tests can run it without Ray or with a small
engine.

Public surface (what the ingress and batch jobs call, through a DeploymentHandle or, when the
ingress is folded in, directly): generate(job), health(), metrics(), model_info().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from cluster.config import TandemConfig, load_config
from cluster.engine_client import EngineCoreClient
from cluster.engine_loop import AsyncEngineLoop
from cluster.job import ChoiceEvent, GenerateJob, JobAccepted, JobError
from cluster.metrics import ServerMetrics
from cluster.metrics_board import PUSH_INTERVAL_S, BoardClient
from cluster.scaling_signals import ScalingSignals
from cluster.speculation import slo_policy_config
from cluster.stream_router import StreamPacing
from engine.engine import LLMEngine
from engine.policy import FirstComePolicy, SchedulingPolicy
from engine.slo_policy import SLOSchedulingPolicy
from policies.profile import Profile

log = logging.getLogger(__name__)

EngineFactory = Callable[[TandemConfig], LLMEngine]


DEFAULT_PROFILE = Path(__file__).resolve().parent.parent / "bench" / "slo_profile.json"


def make_policy(config: TandemConfig) -> SchedulingPolicy:
    """The SLO-aware policy (engine/slo_policy.py) when the config asks for it, or for `auto`
    when a step-cost profile is there; first-come otherwise. A profile that is there but
    cannot be read is an error at startup, never a quiet fall back to first-come."""
    m = config.model
    if m.policy == "first_come":
        return FirstComePolicy(auto_mode=m.auto_mode)
    try:
        profile = cost_profile(config)
    except FileNotFoundError:
        if m.policy == "slo":
            raise
        log.warning("no SLO profile at %s: serving first-come (policy auto)", DEFAULT_PROFILE)
        return FirstComePolicy(auto_mode=m.auto_mode)
    return SLOSchedulingPolicy.from_profile(profile, slo_policy_config(config))


def cost_profile(config: TandemConfig) -> str | Profile:
    """The configured profile; else the one measured for this device and checkpoint
    (bench/profiles/); else on CPU bench/slo_profile.json; else a ~2 s calibration. The log
    says which."""
    m = config.model
    if m.slo_profile:
        log.info("SLO cost profile: %s (configured)", m.slo_profile)
        return m.slo_profile
    from engine.cost_profile import calibrate_checkpoint, find_profile

    found = find_profile(m.device, m.model_dir)
    if found is not None:
        log.info("SLO cost profile: %s (measured for this device and model)", found)
        return str(found)
    if not DEFAULT_PROFILE.is_file():
        raise FileNotFoundError(f"no SLO profile at {DEFAULT_PROFILE}")
    if m.device == "cpu":
        log.info("SLO cost profile: %s (the CPU default)", DEFAULT_PROFILE)
        return str(DEFAULT_PROFILE)
    profile = calibrate_checkpoint(m.model_dir, m.device, Profile.load(DEFAULT_PROFILE))
    log.warning("SLO cost profile: calibrated at start-up in %s s (no measured profile for "
                "this device and model in bench/profiles/)", profile.meta["seconds"])
    return profile


def build_engine(config: TandemConfig) -> LLMEngine:
    m = config.model
    policy = make_policy(config)
    if config.speculation.is_disaggregated:  # a verify pool and draft pools (actors/)
        from cluster.speculation import build_disaggregated

        return build_disaggregated(config, policy)
    if m.tp == 1:
        return LLMEngine.from_checkpoint(m.model_dir, config.engine_config(), m.device, policy,
                                         m.dtype, config.kv_request())
    import ray

    from actors.engine_factory import sharded_engine  # the shard group (actors/)

    # Bundle 0 of this replica's placement group is the replica; ranks take 1..tp.
    return sharded_engine(m.model_dir, m.tp, config.engine_config(), device=m.device,
                          placement_group=ray.util.get_current_placement_group(),
                          policy=policy, bundle_offset=1, kv=config.kv_request(), dtype=m.dtype,
                          num_cpus_per_rank=config.shards.cpus_per_rank)


def _replica_id() -> str | None:
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not inside a Serve replica (unit tests)
        return None


class ModelServer:
    def __init__(self, config: TandemConfig | dict[str, Any] | None = None,
                 engine_factory: EngineFactory | None = None) -> None:
        self.config = load_config(config)
        self.prom = ServerMetrics(self.config.model.name)
        self.engine: LLMEngine | None = None  # in this process only with a thread loop
        self.loop: AsyncEngineLoop | EngineCoreClient
        m = self.config.model
        pacing = StreamPacing(m.stream_interval_ms / 1e3, m.stream_max_chunks_per_s,
                              m.stream_max_interval_ms / 1e3)
        if self.config.engine_core_kind(engine_factory is not None) == "process":
            self.loop = EngineCoreClient(self.config, engine_factory, self.prom, pacing)
        else:
            if self.config.model.torch_threads:
                import torch

                torch.set_num_threads(self.config.model.torch_threads)
            self.engine = (engine_factory or build_engine)(self.config)
            self.loop = AsyncEngineLoop(self.engine, self.prom, pacing)
        self.signals = ScalingSignals(self.prom)
        self.replica = _replica_id() or "local"
        self._pusher: asyncio.Task | None = None

    async def generate(self, job: GenerateJob) -> AsyncIterator[JobAccepted | JobError | list]:
        """JobAccepted or JobError first, then lists of events (ChoiceEvent.to_wire), one per
        engine step or per stream interval. When the caller goes away (the generator is closed
        or cancelled) the job is aborted. What the split ingress and batch jobs call."""
        events = self.events(job)
        try:
            async for item in events:
                yield [e.to_wire() for e in item] if isinstance(item, list) else item
        finally:
            await events.aclose()  # closed or cancelled: the job is aborted there

    async def events(self, job: GenerateJob
                     ) -> AsyncIterator[JobAccepted | JobError | list[ChoiceEvent]]:
        """generate() in this process: the events themselves."""
        self._start_pusher()
        stream = await self.loop.submit(job)
        if isinstance(stream, JobError):
            yield stream
            return
        yield JobAccepted(stream.num_prompt_tokens)
        try:  # woken at most every stream_interval_ms (the job's own, if it has one),
            # cluster/stream_router.py
            while stream.num_open > 0 or stream.has_pending:
                item = await stream.get()
                if isinstance(item, JobError):
                    yield item
                    return
                yield item
        finally:
            if stream.num_open > 0:
                self.loop.abort(stream)

    async def metrics(self) -> tuple[str, str]:
        """(replica id, Prometheus text of this replica)."""
        self._start_pusher()
        return self.replica, self.prom.text()

    async def health(self) -> dict[str, Any]:
        self._start_pusher()
        st = self.loop.stats()
        return {"replica": self.replica, "kv_free_blocks": st.kv_free_blocks,
                "kv_blocks": st.kv_blocks, "num_running": st.num_running,
                "num_waiting": st.num_waiting, "num_steps": st.num_steps,
                "kv_cache": self.loop.kv_cache,
                "engine_step_cpu_s": round(self.loop.step_cpu_s, 6),
                **self.prom.latency_sums()}

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Ray Serve's custom autoscaling metrics (cluster/autoscaling.py scales on them)."""
        return self.signals.read()

    async def model_info(self) -> dict[str, Any]:
        return {"id": self.config.model.name, "max_model_len": self.loop.max_model_len,
                "tp": self.config.model.tp}

    def _start_pusher(self) -> None:
        if self._pusher is None and self.replica != "local":
            self._pusher = asyncio.get_running_loop().create_task(self._push_metrics())

    async def _push_metrics(self) -> None:
        board = BoardClient(self.config_app_name())
        while True:
            with contextlib.suppress(Exception):
                await board.put(self.replica, self.prom.text())
            await asyncio.sleep(PUSH_INTERVAL_S)

    @staticmethod
    def config_app_name() -> str:
        try:
            from ray import serve

            return serve.get_replica_context().app_name
        except Exception:
            return "default"

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.shutdown()
