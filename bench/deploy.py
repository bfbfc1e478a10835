"""Deploy a tandem Serve app from a ray_configs YAML for the reliability benchmarks: a local
Ray (or a given one), a free port on 127.0.0.1 (actors/free_port.py), a count of running
replicas, and a shutdown that leaves no Serve behind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from actors.free_port import free_port
from cluster import cpu_placement, stream_guard
from cluster.config import TandemConfig, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "ray_configs"
SERVE_SYSTEM = ("ServeController", "ProxyActor")
SERVE_GONE_S = 120.0  # a replica's graceful shutdown (60 s in autoscale.yaml), with room


def yaml_args(name: str) -> tuple[str, dict[str, Any]]:
    """(application name, its args) of the first application of ray_configs/<name>."""
    doc = yaml.safe_load((CONFIGS / name).read_text())
    app = doc["applications"][0]
    return app["name"], app["args"]


def start_ray(num_cpus: int = 4) -> None:
    cpu_placement.ray_start_env(auth_off=True)
    import ray

    # address="local": a new Ray of our own, never one another job on this machine started.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             ignore_reinit_error=True, log_to_driver=False, object_store_memory=200 * 1024**2)


def start_cluster(num_workers: int, worker_cpus: int, head: dict[str, float],
                  worker: dict[str, float] | None = None) -> Any:
    """A head (2 CPUs, the custom resources `head`) and num_workers virtual worker nodes (the
    custom resources `worker` each) on this machine (ray.cluster_utils.Cluster), and this
    driver connected to it. Cluster writes its address to /tmp/ray/ray_current_cluster for
    `ray.init()` to find, which would send every other Ray user on the machine to it (a plain
    ray.init(num_cpus=...) then fails): that write is left out."""
    from unittest import mock

    cpu_placement.ray_start_env(auth_off=True)
    import ray
    import ray._private.utils as ray_utils
    from ray.cluster_utils import Cluster

    with mock.patch.object(ray_utils, "write_ray_address", lambda *a, **k: None):
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "resources": head, "include_dashboard": False,
            "object_store_memory": 150 * 1024**2})
    for _ in range(num_workers):
        cluster.add_node(num_cpus=worker_cpus, resources=worker or {},
                         object_store_memory=100 * 1024**2)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    return cluster


def deploy(config: TandemConfig | dict[str, Any], name: str,
           proxy_location: str = "HeadOnly") -> str:
    """serve.run the app on a free port (Ray must be up); returns its base URL. One HTTP
    proxy, on the head, as ray_configs/local.yaml says (serve.start's own default is one per
    node: on virtual nodes of one machine they share the port, and a client connected to the
    proxy of a node that is removed loses its connection with it)."""
    from ray import serve

    from cluster.app import make_app

    port, config = free_port(), load_config(config)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                proxy_location=proxy_location,
                controller_options=stream_guard.controller_options(config))
    serve.run(make_app(config), name=name, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def running_replicas(app: str, deployment: str = "ModelServer") -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    return status.deployments[deployment].replica_states.get("RUNNING", 0)


def wait_for_replicas(app: str, want: int, timeout_s: float,
                      deployment: str = "ModelServer") -> float | None:
    """Seconds until exactly `want` replicas run, or None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if running_replicas(app, deployment) == want:
            return time.monotonic() - t0
        time.sleep(0.5)
    return None


def serve_actors() -> list[str]:
    """Class names of this Ray's Serve actors not dead yet: controller, proxies, replicas."""
    import ray._private.state as state

    return sorted(a["ActorClassName"] for a in state.actors().values()
                  if a["State"] != "DEAD" and (a["ActorClassName"] in SERVE_SYSTEM
                                               or a["ActorClassName"].startswith("ServeReplica:")))


def shutdown_serve(timeout_s: float = SERVE_GONE_S) -> None:
    """serve.shutdown(), then wait until no Serve actor is left. serve.shutdown() finds a
    controller whose serve.start failed (no client was kept) but gives up after 30 s, while
    a replica may drain its streams for graceful_shutdown_timeout_s (60 s in
    autoscale.yaml); the next serve.start would join what is left, on its old HTTP port,
    with a log line only."""
    from ray import serve

    serve.shutdown()
    t0 = time.monotonic()
    while left := serve_actors():
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"Serve actors still alive {timeout_s:.0f} s after "
                               f"serve.shutdown(): {left}")
        time.sleep(0.2)


def live_actors() -> list[tuple[str, int, str]]:
    """(class name, pid, node id) of every live actor of this Ray. Ray's state API needs the
    dashboard, which these runs leave out; the GCS table is read directly."""
    import ray._private.state as state

    return [(a["ActorClassName"], a["Pid"], a["Address"]["NodeID"])
            for a in state.actors().values() if a["State"] == "ALIVE" and a["Pid"]]


def serve_pids(app: str) -> dict[str, int]:
    """Role -> pid of the live Serve processes of `app` (first of each role): model_server,
    ingress, proxy, controller."""
    roles = {f"ServeReplica:{app}:ModelServer": "model_server",
             f"ServeReplica:{app}:OpenAIIngress": "ingress",
             "ProxyActor": "proxy", "ServeController": "controller"}
    out: dict[str, int] = {}
    for cls, pid, _ in live_actors():
        role = roles.get(cls)
        if role is not None and role not in out:
            out[role] = pid
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")
