"""`python -m bench.faults`: failures under load. On a Ray cluster of virtual nodes on this
machine (ray.cluster_utils.Cluster: a head and two workers), streaming clients run while
one part is killed: a tensor-parallel shard rank (SIGKILL, tp2), the model-server replica
(SIGKILL), the ingress replica (SIGKILL), a worker node holding a model-server replica
(its raylet and workers killed, no grace). For each: the requests that failed and how (a
clear error each, none hanging past the client's timeout; a stream cut without an error
event counts as `cut`: cluster/stream_guard.py should leave none), seconds until a probe is served
again, and that requests started after that all complete. One verdict line.
tests/cluster/test_faults.py runs the replica kill."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import deploy
from bench.load import Outcome, body_of, run_clients

SLO = {"ttft_ms": 30_000.0}
HEAD = {"tandem_head": 0.01}  # a custom resource only the head node has (100 of it)
HEAD_NODE = {"tandem_head": 100.0}
WORKER = {"tandem_worker": 0.01}  # a custom resource only worker nodes have (100 each)
WORKER_NODE = {"tandem_worker": 100.0}


def kill_actor(class_name: str) -> Callable[[Any], str]:
    def kill(_cluster: Any) -> str:
        pids = [pid for cls, pid, _ in deploy.live_actors() if cls.endswith(class_name)]
        if not pids:
            raise RuntimeError(f"no live actor {class_name}")
        os.kill(pids[0], signal.SIGKILL)
        return f"SIGKILL {class_name} pid {pids[0]}"
    return kill


def kill_node(cluster: Any) -> str:
    nodes = {node for cls, _, node in deploy.live_actors() if cls.endswith(":ModelServer")}
    victim = next(n for n in cluster.worker_nodes if n.node_id in nodes)
    cluster.remove_node(victim, allow_graceful=False)
    return f"removed worker node {victim.node_id[:8]} (no grace)"


def app_args(fault: str) -> tuple[str, dict[str, Any]]:
    name, args = deploy.yaml_args("tp2.yaml" if fault == "shard_rank" else "local.yaml")
    args = copy.deepcopy(args)
    args["ingress"]["ray_actor_options"] = {"num_cpus": 0, "resources": HEAD}
    ms = args["model_server"]
    if fault == "ingress":  # an ingress of its own to kill (layout single has none)
        args["layout"] = "split"
    if fault == "node":  # two replicas, one per worker node: one survives the node. Off the
        # head: the proxy there would send every request to a replica on its own node.
        ms.update(num_replicas=2, max_replicas_per_node=1,
                  ray_actor_options={"num_cpus": 0, "resources": WORKER})
    elif fault != "shard_rank":  # (a tp2 replica sits in its placement group's bundle 0)
        ms["ray_actor_options"] = {"num_cpus": 0, "resources": HEAD}
    return f"faults-{fault}", args


KILLS: dict[str, Callable[[Any], str]] = {
    "shard_rank": kill_actor("ShardWorker"), "model_server": kill_actor(":ModelServer"),
    "ingress": kill_actor(":OpenAIIngress"), "node": kill_node,
}


async def probe_until_served(url: str, since: float, timeout_s: float) -> float | None:
    """Seconds from `since` until a small completion is answered 200 again."""
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() - since < timeout_s:
            try:
                r = await client.post(f"{url}/v1/completions",
                                      json={"prompt": "a", "max_tokens": 2})
                if r.status_code == 200:
                    return time.monotonic() - since
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    return None


async def under_load(url: str, kill: Callable[[], str], clients: int, kill_at: float,
                     duration: float, timeout_s: float,
                     stop_after: int | None = None) -> dict[str, Any]:
    """stop_after: stop the clients once this many requests started after the recovery (as
    `judge` counts them) have ended, instead of running the whole duration."""
    t0 = time.monotonic()
    stop = asyncio.Event()
    outcomes: list[Outcome] = []

    async def killer() -> tuple[str, float, float | None]:
        await asyncio.sleep(kill_at)
        what = await asyncio.to_thread(kill)
        killed = time.monotonic()
        back = await probe_until_served(url, killed, duration)
        if back is not None and stop_after is not None:
            since = killed - t0 + back + 1.0
            while (sum(o.start > since for o in outcomes) < stop_after
                   and time.monotonic() - t0 < duration):
                await asyncio.sleep(0.25)
            stop.set()
        return what, killed - t0, back

    task = asyncio.create_task(killer())
    await run_clients(url, lambda t: clients, duration, lambda rng: body_of(rng, 24, SLO),
                      clients, timeout_s=timeout_s, refusal_pause_s=0.5, stop=stop,
                      sink=outcomes)
    what, killed_at, back = await task
    return judge(outcomes, what, killed_at, back, timeout_s)


def is_cut(o: Outcome) -> bool:
    """Failed without a word from the server: neither an error event nor an HTTP status."""
    err = o.error or ""
    return not (err.startswith("stream error:") or re.match(r"\d{3}: ", err))


def judge(outcomes: list[Outcome], what: str, killed_at: float, back: float | None,
          timeout_s: float) -> dict[str, Any]:
    failed = [o for o in outcomes if o.is_failed]
    hanging = [o for o in failed if o.end - o.start >= timeout_s - 1]
    served_at = killed_at + (back if back is not None else float("inf"))
    after = [o for o in outcomes if o.start > served_at + 1.0]
    cut = [o for o in failed if is_cut(o)]
    return {"kill": what, "killed_at_s": round(killed_at, 1), "cut": len(cut),
            "served_again_s": None if back is None else round(back, 2),
            "requests": len(outcomes), "failed": len(failed), "hanging": len(hanging),
            "errors": dict(Counter((o.error or "")[:120] for o in failed).most_common(4)),
            "failed_before_kill": sum(o.end < killed_at for o in failed),
            "after_recovery": len(after), "lost_after_recovery": sum(o.is_failed for o in after)}


def line(fault: str, r: dict[str, Any]) -> str:
    return (f"{fault}: {r['failed']} failed / {r['requests']} ({r['hanging']} hanging, "
            f"{r['cut']} cut), "
            f"served again after {r['served_again_s']} s, {r['lost_after_recovery']} lost "
            f"of {r['after_recovery']} after")


def ok(r: dict[str, Any]) -> bool:
    return (r["served_again_s"] is not None and r["hanging"] == 0 and r["cut"] == 0
            and r["lost_after_recovery"] == 0 and r["failed_before_kill"] == 0
            and r["after_recovery"] > 0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    p.add_argument("--faults", default="shard_rank,model_server,ingress,node")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--kill-at", type=float, default=15.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--timeout", type=float, default=60.0, help="each client request's")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "faults_results.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cluster = deploy.start_cluster(2, 3, HEAD_NODE, WORKER_NODE)  # 3 CPUs: a tp2 group fits
    results = {}
    for fault in args.faults.split(","):
        name, cfg = app_args(fault)
        kill = KILLS[fault]
        try:  # a serve.start that fails still leaves its controller: shut it down too
            url = deploy.deploy(cfg, name)
            results[fault] = asyncio.run(under_load(url, lambda k=kill: k(cluster),
                                                    args.clients, args.kill_at, args.duration,
                                                    args.timeout))
        finally:  # gone before the next app's serve.start, which would join what is left
            deploy.shutdown_serve()
    args.json.write_text(json.dumps(results, indent=1))
    good = all(ok(r) for r in results.values())
    print(f"faults {'PASS' if good else 'FAIL'} | "
          + " | ".join(line(f, r) for f, r in results.items()), flush=True)


if __name__ == "__main__":
    main()
