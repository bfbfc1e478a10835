"""A fault under load, for real: the model-server replica of ray_configs/local.yaml is
SIGKILLed while streaming clients run. Its requests end with an error (none hangs), Serve
starts a new replica, a probe is served again, and every request started after that
completes. The other faults (shard rank, ingress, node) are `python -m bench.faults`."""

from __future__ import annotations

import asyncio

import pytest

from bench import faults
from cluster.config import load_config
from tests.cluster.conftest import running_app, yaml_app

pytestmark = pytest.mark.slow


def test_model_server_replica_sigkill_under_load(ray_session) -> None:
    app = yaml_app("local.yaml")
    kill = faults.KILLS["model_server"]
    with running_app(load_config(app["args"]), app["name"]) as url:
        res = asyncio.run(faults.under_load(url, lambda: kill(None), clients=4, kill_at=4.0,
                                            duration=60.0, timeout_s=30.0))
    assert res["served_again_s"] is not None, res
    assert res["hanging"] == 0 and res["failed_before_kill"] == 0, res
    assert res["after_recovery"] > 0 and res["lost_after_recovery"] == 0, res
