"""`python -m bench.autoscale`: ray_configs/autoscale.yaml deployed for real (1-3 model-server
replicas on CPU) under a load ramp: clients rise to a peak, hold, fall to one light client
(replicas stop while it streams), then the run waits for the fall back to one replica. Run
once with tandem's SLO policy and once with Serve's default policy (the same YAML without
`policy:`), on the same ramp and seeds; prints one verdict line, writes the JSON and a plot
(replicas and SLO attainment over time).

PASS: no request of either run failed (a refusal is a 429 with a reason; a stream cut or a
5xx is a failure), both end at one replica, and the SLO policy reached at least the default
policy's attainment (to two decimals) with at most its replica-seconds. Whether each rose
above one replica is printed: on a quiet machine one replica may carry the whole ramp.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

from bench import deploy
from bench.load import Outcome, body_of, run_clients, summary

OUT = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.autoscale", description=__doc__)
    p.add_argument("--policies", default="slo,default", help="comma list of slo, default")
    p.add_argument("--peak", type=int, default=24, help="clients at the plateau")
    p.add_argument("--up", type=float, default=30.0, help="seconds of ramp up")
    p.add_argument("--plateau", type=float, default=45.0)
    p.add_argument("--down", type=float, default=20.0, help="seconds of ramp down to 1 client")
    p.add_argument("--tail", type=float, default=40.0, help="seconds of 1 client after it")
    p.add_argument("--settle", type=float, default=60.0, help="max wait for 1 replica after")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--ttft-ms", type=float, default=1500.0)
    p.add_argument("--tpot-ms", type=float, default=80.0)
    p.add_argument("--upscale-delay", type=float, default=None, help="override the YAML's")
    p.add_argument("--downscale-delay", type=float, default=None, help="override the YAML's")
    p.add_argument("--json", type=Path, default=OUT / "autoscale_results.json")
    p.add_argument("--plot", type=Path, default=OUT / "autoscale.png")
    return p.parse_args(argv)


def ramp(args: argparse.Namespace):
    def active(t: float) -> int:
        if t < args.up:
            return max(1, math.ceil(args.peak * t / args.up))
        t -= args.up
        if t < args.plateau:
            return args.peak
        t -= args.plateau
        if t < args.down:
            return max(1, round(args.peak * (1 - t / args.down)))
        return 1
    return active


def app_config(policy: str, args: argparse.Namespace) -> dict[str, Any]:
    _, cfg = deploy.yaml_args("autoscale.yaml")
    cfg = copy.deepcopy(cfg)
    auto = cfg["model_server"]["autoscaling_config"]
    if policy == "default":
        auto.pop("policy")
    if args.upscale_delay is not None:
        auto["upscale_delay_s"] = args.upscale_delay
    if args.downscale_delay is not None:
        auto["downscale_delay_s"] = args.downscale_delay
    return cfg


async def sample_replicas(app: str, stop: asyncio.Event, t0: float,
                          out: list[tuple[float, int]]) -> None:
    while not stop.is_set():
        n = await asyncio.to_thread(deploy.running_replicas, app)
        out.append((time.monotonic() - t0, n))
        await asyncio.sleep(1.0)


async def drive(url: str, app: str, args: argparse.Namespace
                ) -> tuple[list[Outcome], list[tuple[float, int]]]:
    duration = args.up + args.plateau + args.down + args.tail
    slo = {"ttft_ms": args.ttft_ms, "tpot_ms": args.tpot_ms}
    replicas: list[tuple[float, int]] = []
    stop, t0 = asyncio.Event(), time.monotonic()
    sampler = asyncio.create_task(sample_replicas(app, stop, t0, replicas))
    outcomes = await run_clients(url, ramp(args), duration,
                                 lambda rng: body_of(rng, args.max_tokens, slo), args.peak)
    settle_end = time.monotonic() + args.settle
    while time.monotonic() < settle_end and (not replicas or replicas[-1][1] != 1):
        await asyncio.sleep(1.0)
    stop.set()
    await sampler
    return outcomes, replicas


def run_policy(policy: str, args: argparse.Namespace) -> dict[str, Any]:
    app = f"autoscale-{policy}"
    try:  # a serve.start that fails still leaves its controller: shut it down too
        url = deploy.deploy(app_config(policy, args), app)
        outcomes, replicas = asyncio.run(drive(url, app, args))
    finally:  # replicas drain for up to 60 s; the next policy's serve.start must not join them
        deploy.shutdown_serve()
    load_end = args.up + args.plateau + args.down + args.tail
    res = {"policy": policy, **summary(outcomes), "replicas": replicas,
           "max_replicas": max(n for _, n in replicas),
           "final_replicas": replicas[-1][1],
           "replica_seconds": sum(n for t, n in replicas if t <= load_end),
           "first_up_s": next((t for t, n in replicas if n > 1), None),
           "back_to_one_s": next((t - load_end for t, n in replicas
                                  if t > load_end and n == 1), None),
           "timeline": timeline(outcomes, load_end)}
    return res


def timeline(outcomes: list[Outcome], end: float, step: float = 5.0) -> list[dict[str, float]]:
    """Per `step` seconds of request start: requests and the share that met its SLO."""
    rows = []
    for k in range(int(end // step) + 1):
        batch = [o for o in outcomes if k * step <= o.start < (k + 1) * step]
        if batch:
            rows.append({"t": k * step, "requests": len(batch),
                         "attainment": sum(o.met_slo for o in batch) / len(batch)})
    return rows


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for r in results:
        ts, ns = zip(*r["replicas"], strict=True)
        ax1.step(ts, ns, where="post", label=f"{r['policy']} policy")
        ax2.plot([x["t"] for x in r["timeline"]], [x["attainment"] for x in r["timeline"]],
                 marker="o", label=f"{r['policy']} (overall {r['attainment']:.2f})")
    ax1.set_ylabel("running replicas")
    ax2.set_ylabel("SLO attainment (per 5 s)")
    ax2.set_xlabel("seconds since the ramp began")
    ax1.legend()
    ax2.legend()
    fig.suptitle("autoscale.yaml under a ramp (CPU, shared 2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def verdict(results: list[dict[str, Any]]) -> str:
    by = {r["policy"]: r for r in results}
    parts, ok = [], all(r["failed"] == 0 for r in results)
    for r in results:
        parts.append(f"{r['policy']}: replicas max {r['max_replicas']} final "
                     f"{r['final_replicas']}, attainment {r['attainment']:.2f}, "
                     f"replica-s {r['replica_seconds']}, {r['requests']} requests "
                     f"({r['refused']} refused, {r['failed']} failed)")
    ok = ok and all(r["final_replicas"] == 1 for r in results)
    if "slo" in by and "default" in by:
        slo, default = by["slo"], by["default"]
        ok = ok and (round(slo["attainment"], 2) >= round(default["attainment"], 2)
                     and slo["replica_seconds"] <= default["replica_seconds"])
    return f"autoscale {'PASS' if ok else 'FAIL'} | " + " | ".join(parts)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    deploy.start_ray()
    results = [run_policy(p, args) for p in args.policies.split(",")]
    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                     "results": results}, indent=1))
    plot(results, args.plot)
    print(verdict(results), flush=True)


if __name__ == "__main__":
    main()
