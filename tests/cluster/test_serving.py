"""The Serve fixture of these tests (conftest.serving) leaves the shared Ray as it found it.
In the fourteenth session's fresh clone, serve.start of test_autoscale_ramp failed (its proxy
could not bind the port picked for it: a Ray process had been handed it meanwhile), the
controller it had started stayed up, and test_faults' serve.start joined that controller,
on the old port: both failed. Here the port is taken on purpose."""

from __future__ import annotations

import socket

import pytest

from actors.free_port import free_port
from bench import deploy
from tests.cluster.conftest import serving

pytestmark = pytest.mark.slow


def test_a_serve_start_that_fails_leaves_no_serve_behind(ray_session) -> None:
    from ray import serve

    @serve.deployment
    class Hello:
        def __call__(self) -> str:
            return "hello"

    with socket.socket() as taken:
        port = free_port()
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(Exception, match="Failed to bind"), serving(Hello.bind(), "hello",
                                                                        "/", port=port):
            pass
    assert deploy.serve_actors() == []


def test_the_sessions_ray_workers_run_at_the_niceness_tandem_serve_gives_them(
        ray_session) -> None:
    import os

    from cluster.cpu_placement import SERVING_WORKER_NICE

    @ray_session.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    assert ray_session.get(niceness.remote(), timeout=120) == SERVING_WORKER_NICE
