"""A fault under load, for real: the model-server replica of ray_configs/local.yaml is
SIGKILLed while streaming clients run, one of them the real `openai` client mid-stream. Every
stream in flight ends with an error event the client can read (the openai client raises
APIError; none sees a cut connection, none hangs: cluster/stream_guard.py in Serve's proxy),
Serve starts a new replica, a probe is served again, and every request started after that
completes. The other faults (shard rank, ingress, node) are `python -m bench.faults`."""

from __future__ import annotations

import asyncio
import threading

import openai
import pytest

from bench import faults
from cluster.config import load_config
from tests.cluster.conftest import running_app, yaml_app

pytestmark = pytest.mark.slow

# Deadlines for a loaded 2-core machine; the run ends on its condition (4 requests started
# after the recovery ended), not on them. With two CPU-bound processes beside the suite, the
# first replica took 65 s to start and its replacement was not serving 60 s after the kill
# (flaky session, 2026-12-04): a request sent meanwhile waits for it, and is no hang.
RECOVERY_DEADLINE_S = 240.0
CLIENT_TIMEOUT_S = 120.0  # a request with no answer by then counts as hanging


def openai_stream(url: str, first: threading.Event, out: dict) -> None:
    """A long stream (ignore_eos) that is in flight when the replica dies."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0,
                           timeout=CLIENT_TIMEOUT_S)
    out["chunks"] = 0
    try:
        stream = client.completions.create(model="tandem-tiny", prompt="def f(", stream=True,
                                           max_tokens=2000, extra_body={"ignore_eos": True})
        for _ in stream:
            out["chunks"] += 1
            first.set()
        out["error"] = None
    except openai.APIError as err:  # what a client should get: the server's error
        out["error"] = err
    except Exception as err:  # a cut connection (httpx.RemoteProtocolError) or a hang
        out["error"] = err
    finally:
        first.set()


def test_model_server_replica_sigkill_under_load(ray_session) -> None:
    app = yaml_app("local.yaml")
    kill = faults.KILLS["model_server"]
    out: dict = {}
    first = threading.Event()
    with running_app(load_config(app["args"]), app["name"]) as url:
        reader = threading.Thread(target=openai_stream, args=(url, first, out), daemon=True)
        reader.start()
        assert first.wait(60), "the openai stream never started"

        def kill_when_streaming() -> str:
            return kill(None)
        res = asyncio.run(faults.under_load(url, kill_when_streaming, clients=4, kill_at=2.0,
                                            duration=RECOVERY_DEADLINE_S,
                                            timeout_s=CLIENT_TIMEOUT_S, stop_after=4))
        reader.join(45)
    assert not reader.is_alive(), "the openai stream hung after the kill"
    err = out["error"]
    assert isinstance(err, openai.APIError) and "was lost" in err.message, repr(err)
    assert out["chunks"] > 0
    assert res["served_again_s"] is not None, res
    assert res["hanging"] == 0 and res["failed_before_kill"] == 0, res
    assert res["after_recovery"] > 0 and res["lost_after_recovery"] == 0, res
    # Every failure is an error the server said (an event or a status), never a cut stream.
    assert res["cut"] == 0, res["errors"]
