"""ray_configs/autoscale.yaml deployed for real with the SLO policy, delays shortened: a
burst of streaming clients with a tight TPOT (one replica refuses them or misses) takes the
deployment above one replica; one light client afterwards lets it fall back to one while
that client keeps streaming. No request fails on the way (a replica going away finishes its
streams). The long ramp against Serve's default policy is `python -m bench.autoscale`."""

from __future__ import annotations

import asyncio
import copy

import pytest

from bench import deploy
from bench.load import body_of, run_clients
from cluster.autoscaling import POLICY_PATH
from tests.cluster.conftest import running_app, yaml_app

pytestmark = pytest.mark.slow

BURST = 12
TIGHT = {"ttft_ms": 2000.0, "tpot_ms": 20.0}  # one replica refuses or misses a burst
LOOSE = {"ttft_ms": 60_000.0}  # the light client afterwards: met by any replica count


def ramp_config() -> tuple[str, dict]:
    app = yaml_app("autoscale.yaml")
    args = copy.deepcopy(app["args"])
    auto = args["model_server"]["autoscaling_config"]
    assert auto["policy"]["policy_function"] == POLICY_PATH
    assert (auto["min_replicas"], auto["max_replicas"]) == (1, 3)
    auto.update(upscale_delay_s=1, downscale_delay_s=4, look_back_period_s=3,
                metrics_interval_s=0.5)
    args["ingress"] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}
    return app["name"], args


async def drive(url: str, app: str) -> tuple[list, list[int], dict[str, float]]:
    phase: dict = {"clients": BURST, "slo": TIGHT}
    seen: list[int] = []
    marks: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def watch() -> None:
        while True:
            n = await asyncio.to_thread(deploy.running_replicas, app)
            seen.append(n)
            t = loop.time() - t0
            if n > 1 and "up" not in marks:
                marks["up"] = t
                phase.update(clients=1, slo=LOOSE)  # the burst did its work: one light client
            if "up" in marks and n == 1:
                marks["down"] = t
                return
            if t > 150:
                return
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    done = asyncio.Event()
    watcher.add_done_callback(lambda _: done.set())

    def active(t: float) -> int:
        return 0 if done.is_set() else phase["clients"]
    outcomes = await run_clients(url, active, 160, lambda rng: body_of(rng, 24, phase["slo"]),
                                 BURST,
                                 stop=done)
    await watcher
    return outcomes, seen, marks


def test_replicas_rise_under_refusals_and_fall_back_without_losing_a_request(
        ray_session) -> None:
    name, args = ramp_config()
    from cluster.config import load_config

    with running_app(load_config(args), name) as url:
        outcomes, seen, marks = asyncio.run(drive(url, name))
    assert "up" in marks, f"never above one replica: {seen}"
    assert "down" in marks, f"never back to one replica: {seen}"
    failed = [o for o in outcomes if o.is_failed]
    assert not failed, [o.error for o in failed][:3]
    # What the policy scaled on: refusals (predicted misses) or observed misses.
    assert any(o.is_refused or not o.met_slo for o in outcomes if o.start < marks["up"])
    after_up = [o for o in outcomes if o.start > marks["up"]]
    assert any(o.complete for o in after_up)  # it streamed while replicas went away
