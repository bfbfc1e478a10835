"""`python -m bench.multinode`: a multi-node cluster on one machine (ray.cluster_utils.Cluster:
a head and three worker nodes, each a raylet of its own with a few logical CPUs). Checks:
replicas spread one per node (max_replicas_per_node), a TP=2 shard group packed on one node
with its replica (STRICT_PACK), ray_configs/multinode-gpu.yaml's layout with CPUs in place
of GPUs (tp 2 and 2 replicas here, to fit the box: replica bundle + rank bundles packed per
node, one group per node, API key on), and a worker node removed under load (its requests
fail with an error, a probe is served again, later requests complete). One verdict line."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from bench import deploy, faults

HEAD = faults.HEAD


def placement(app: str) -> dict[str, list[str]]:
    """Node id -> the classes of the app's actors there (replicas and shard ranks)."""
    out: dict[str, list[str]] = defaultdict(list)
    for cls, _, node in deploy.live_actors():
        if cls.startswith(f"ServeReplica:{app}:") or cls == "ShardWorker":
            out[node].append(cls.rsplit(":", 1)[-1])
    return dict(out)


def pinned(args: dict[str, Any]) -> dict[str, Any]:
    args = copy.deepcopy(args)
    args["ingress"] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0,
                                                                "resources": HEAD}}
    return args


def check_spread() -> dict[str, Any]:
    _, args = deploy.yaml_args("local.yaml")
    args = pinned(args)
    args["model_server"].update(num_replicas=3, max_replicas_per_node=1)
    return _deploy_and_place("spread", args, want_replicas=3)


def check_tp2() -> dict[str, Any]:
    _, args = deploy.yaml_args("tp2.yaml")
    args = pinned(args)
    args["shards"] = {"cpus_per_rank": 1}
    return _deploy_and_place("tp2", args, want_replicas=1)


def check_gpu_layout() -> dict[str, Any]:
    _, args = deploy.yaml_args("multinode-gpu.yaml")
    args = pinned(args)
    m = args["model"]
    for k in ("model_dir", "served_model_name", "max_model_len"):
        m.pop(k)
    m.update(device="cpu", tp=2, num_kv_blocks=256, max_batch_tokens=2048, max_num_seqs=64)
    args["shards"] = {"cpus_per_rank": 1, "gpus_per_rank": 0, "replica_cpus": 1}
    args["model_server"]["num_replicas"] = 2
    return _deploy_and_place("gpu-layout", args, want_replicas=2, key=args["api_keys"][0])


def _deploy_and_place(app: str, args: dict[str, Any], want_replicas: int,
                      key: str | None = None) -> dict[str, Any]:
    try:  # a serve.start that fails still leaves its controller: shut it down too
        url = deploy.deploy(args, app)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        r = httpx.post(f"{url}/v1/completions", headers=headers, timeout=120,
                       json={"prompt": "def f(", "max_tokens": 4})
        where = placement(app)
    finally:  # gone before the next app's serve.start, which would join what is left
        deploy.shutdown_serve()
    replicas = {n: c.count("ModelServer") for n, c in where.items()}
    ranks = {n: c.count("ShardWorker") for n, c in where.items()}
    tp = args["model"]["tp"]
    packed = all(ranks.get(n, 0) == (tp if tp > 1 else 0) * k for n, k in replicas.items())
    ok = (r.status_code == 200 and sum(replicas.values()) == want_replicas
          and all(k <= 1 for k in replicas.values()) and packed
          and sum(ranks.values()) == (tp if tp > 1 else 0) * want_replicas)
    return {"ok": ok, "status": r.status_code, "nodes": {n[:8]: c for n, c in where.items()}}


def check_node_loss(cluster: Any, clients: int, duration: float) -> dict[str, Any]:
    name, args = faults.app_args("node")
    try:  # a serve.start that fails still leaves its controller: shut it down too
        url = deploy.deploy(args, name)
        res = asyncio.run(faults.under_load(url, lambda: faults.kill_node(cluster), clients,
                                            duration / 4, duration, 60.0))
        res["after"] = placement(name)
    finally:
        deploy.shutdown_serve()
    res["ok"] = faults.ok(res)
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.multinode", description=__doc__)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "multinode_results.json")
    args = p.parse_args(argv)
    cluster = deploy.start_cluster(3, 3, faults.HEAD_NODE, faults.WORKER_NODE)
    res = {"spread": check_spread(), "tp2": check_tp2(), "gpu_layout": check_gpu_layout(),
           "node_loss": check_node_loss(cluster, args.clients, args.duration)}
    args.json.write_text(json.dumps(res, indent=1, default=str))
    good = all(r["ok"] for r in res.values())
    print(f"multinode {'PASS' if good else 'FAIL'} | "
          + " | ".join(f"{k}: {'ok' if r['ok'] else 'FAIL'} {r.get('nodes', '')}"
                       for k, r in list(res.items())[:3])
          + " | node loss: " + faults.line("node", res["node_loss"]), flush=True)


if __name__ == "__main__":
    main()
