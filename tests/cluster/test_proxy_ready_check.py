"""cluster/cpu_placement.ray_start_env gives Serve's proxy serve.start's whole wait to answer
its first ready check. With Ray's 5 s, a proxy slow to start on a loaded machine missed three
checks, the controller killed it, and serve.start raised ActorDiedError (the tests under two
CPU hogs, fifteenth session)."""

from __future__ import annotations

import os

import pytest

from cluster import cpu_placement
from cluster.cpu_placement import PROXY_READY_CHECK_S, PROXY_READY_ENV


def test_the_env_gives_the_proxy_serve_starts_whole_wait(monkeypatch) -> None:
    from ray.serve._private import constants

    monkeypatch.delenv(PROXY_READY_ENV, raising=False)
    cpu_placement.ray_start_env()
    timeout_s = float(os.environ[PROXY_READY_ENV])
    # the controller kills the proxy after this many misses; serve.start waits this long
    misses, wait_s = constants.PROXY_HEALTH_CHECK_UNHEALTHY_THRESHOLD, constants.HTTP_PROXY_TIMEOUT
    assert timeout_s * misses >= wait_s
    assert timeout_s > 5.0  # more than Ray's own default


def test_a_ready_check_timeout_the_user_set_wins(monkeypatch) -> None:
    monkeypatch.setenv(PROXY_READY_ENV, "7.5")
    cpu_placement.ray_start_env()
    assert os.environ[PROXY_READY_ENV] == "7.5"


@pytest.mark.slow
def test_the_sessions_serve_controller_reads_the_ready_check_timeout(ray_session) -> None:
    from ray import serve

    from bench import deploy
    from tests.cluster.conftest import serving

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
    class Hello:
        def __call__(self) -> str:
            return "hello"

    with serving(Hello.bind(), "hello", "/"):
        pid = deploy.serve_pids("hello")["controller"]
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    assert float(env[PROXY_READY_ENV.encode()]) == PROXY_READY_CHECK_S
