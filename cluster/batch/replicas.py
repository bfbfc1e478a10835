"""Where a batch job runs, and the device-work meter of its own replicas.

Own replicas: the config's model-server deployment (same Serve options, placement groups at
tp >= 2, spread over the nodes of a cluster with max_replicas_per_node) under an app of its
own, without HTTP: the job reaches it through a DeploymentHandle, and Serve routes each
request to a replica. Its engine's executor is wrapped in a meter that counts the tokens of
every chunk it runs, so the job can report device work (tokens through the model per output
token); each job's tally is sent as the last item of its stream.

A running app (`--app NAME`, e.g. `serve run ray_configs/local.yaml`): the handle of that
app's ModelServer deployment; its replicas are shared with online traffic, which the batch
job yields to through its lower priority. No meter there.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cluster import cpu_placement
from cluster.batch.adapter import DeviceWork
from cluster.config import TandemConfig
from cluster.job import GenerateJob
from cluster.model_server import ModelServer, build_engine
from engine.engine import LLMEngine
from engine.executor import Executor
from engine.plan import StepOutput, StepPlan

APP = "tandem-batch"
DEPLOYMENT = "ModelServer"


class MeteredExecutor(Executor):
    """The real executor, counting each request's tokens per step (prefill apart)."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.tokens: dict[str, Counter] = {}  # request id -> mode -> tokens

    def step(self, plan: StepPlan) -> StepOutput:
        for w in plan.works:
            key = "prefill" if w.kind == "prefill" else w.mode
            self.tokens.setdefault(w.request_id, Counter())[key] += w.num_tokens
        return self.inner.step(plan)

    def take(self, prefix: str) -> Counter:
        """Pop and sum the tallies of the requests whose id starts with prefix."""
        total: Counter = Counter()
        for rid in [r for r in self.tokens if r.startswith(prefix)]:
            total.update(self.tokens.pop(rid))
        return total

    def shutdown(self) -> None:
        self.inner.shutdown()

    def __getattr__(self, name: str) -> Any:  # the rest of the executor's API (logprobs)
        return getattr(self.inner, name)


def metered_engine(config: TandemConfig) -> LLMEngine:
    engine = build_engine(config)
    engine.executor = MeteredExecutor(engine.executor)
    return engine


class BatchModelServer(ModelServer):
    """The model server, metered: after a job's events, its DeviceWork."""

    def __init__(self, config: TandemConfig | dict[str, Any] | None = None) -> None:
        super().__init__(config, metered_engine)

    async def generate(self, job: GenerateJob) -> AsyncIterator[Any]:
        meter = self.engine.executor
        assert isinstance(meter, MeteredExecutor)
        prefix = f"{job.id}-"  # engine request ids are f"{job.id}-{choice index}"
        try:
            async for item in super().generate(job):
                yield item
            yield DeviceWork(dict(meter.take(prefix)))
        finally:
            meter.take(prefix)  # an aborted job's tally is dropped


@dataclass
class Target:
    handle: Any  # DeploymentHandle of the model server
    app: str
    is_own: bool
    num_replicas: int


def init_ray(address: str | None) -> bool:
    """Connect (address), or start a local Ray; True when this process started it (or
    connected) here, False when Ray was already initialized in this process (tests)."""
    cpu_placement.ray_start_env()  # the engines' step loops not below other processes
    import ray

    if ray.is_initialized():
        return False
    # "local": a Ray of its own even when `ray start` left a cluster on this machine (a bare
    # ray.init() would join that one, and ray.shutdown() would not stop what it started).
    ray.init(address=address or "local", include_dashboard=False, ignore_reinit_error=True,
             log_to_driver=False)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the bar and summary only
    return True


def start_own(config: TandemConfig, app: str = APP) -> Target:
    """Deploy the config's model servers (metered) as `app`, without HTTP."""
    from ray import serve

    serve.start(proxy_location="Disabled")
    dep = serve.deployment(BatchModelServer, name=DEPLOYMENT).options(
        **config.model_server_options())
    handle = serve.run(dep.bind(config), name=app, route_prefix=None)
    replicas = config.model_server.num_replicas or 1
    return Target(handle, app, True, replicas)


def connect(app: str) -> Target:
    """The ModelServer of a running app; a clear error if there is none."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        names = ", ".join(serve.status().applications) or "none"
        raise LookupError(f"no Serve application {app!r} on this cluster (running: {names})")
    if DEPLOYMENT not in status.deployments:
        raise LookupError(f"application {app!r} has no {DEPLOYMENT} deployment "
                          f"(it has {', '.join(status.deployments)})")
    replicas = sum(status.deployments[DEPLOYMENT].replica_states.values()) or 1
    return Target(serve.get_deployment_handle(DEPLOYMENT, app), app, False, replicas)


def stop_own(target: Target) -> None:
    from ray import serve

    if target.is_own:
        serve.delete(target.app)
