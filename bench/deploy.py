"""Deploy a tandem Serve app from a ray_configs YAML for the reliability benchmarks: a local
Ray (or a given one), a free port on 127.0.0.1, and a count of running replicas."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from cluster.config import TandemConfig, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "ray_configs"


def yaml_args(name: str) -> tuple[str, dict[str, Any]]:
    """(application name, its args) of the first application of ray_configs/<name>."""
    doc = yaml.safe_load((CONFIGS / name).read_text())
    app = doc["applications"][0]
    return app["name"], app["args"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(num_cpus: int = 4) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True,
             log_to_driver=False, object_store_memory=200 * 1024**2)


def deploy(config: TandemConfig | dict[str, Any], name: str) -> str:
    """serve.run the app on a free port (Ray must be up); returns its base URL."""
    from ray import serve

    from cluster.app import make_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(make_app(load_config(config)), name=name, route_prefix="/")
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
