"""`python -m bench.soak`: ray_configs/local.yaml under 64 concurrent streaming clients for
5 minutes (mixed decoding modes and SLOs, ~10 % of requests hung up mid-stream). After a
warm-up the resident memory of each Serve process (model-server replica, ingress, proxy,
controller) is noted; at the end: no server error (a 5xx, a cut stream, an error event;
429 refusals are answers), every KV block free once the clients are gone, each process's
RSS within 10 % of its post-warm-up level; p50/p99 TTFT and inter-token latency. One
verdict line; the JSON goes to --json."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx

from bench import deploy
from bench.load import body_of, run_clients, summary

MODES = ("auto", "auto", "ar", "spec_linear", "spec_quadratic", "diffusion")
SLOS = (None, {"ttft_ms": 5000.0}, {"ttft_ms": 3000.0, "tpot_ms": 300.0},
        {"deadline_ms": 20_000.0})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=300.0, help="seconds after warm-up")
    p.add_argument("--warmup", type=float, default=30.0)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--disconnect", type=float, default=0.1, help="share of requests cut")
    p.add_argument("--rss-tolerance", type=float, default=0.10)
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "soak_results.json")
    return p.parse_args(argv)


def make_body(rng: random.Random, max_tokens: int) -> dict[str, Any]:
    return body_of(rng, rng.randint(4, max_tokens), rng.choice(SLOS), MODES)


def rss_of(pids: dict[str, int]) -> dict[str, float]:
    return {role: round(deploy.rss_mb(pid), 1) for role, pid in pids.items()}


async def soak(url: str, args: argparse.Namespace, pids: dict[str, int]) -> dict[str, Any]:
    total = args.warmup + args.duration
    marks: dict[str, Any] = {}

    async def note_warm() -> None:
        await asyncio.sleep(args.warmup)
        marks["rss_warm"] = rss_of(pids)

    noter = asyncio.create_task(note_warm())
    outcomes = await run_clients(url, lambda t: args.clients, total,
                                 lambda rng: make_body(rng, args.max_tokens), args.clients,
                                 disconnect_p=args.disconnect)
    await noter
    measured = [o for o in outcomes if o.start >= args.warmup]
    return {**summary(measured), "warmup_requests": len(outcomes) - len(measured),
            "rss_warm_mb": marks["rss_warm"], "outcomes_total": len(outcomes)}


def kv_free_after(url: str, timeout_s: float = 30.0) -> dict[str, Any]:
    t0 = time.monotonic()
    while True:
        h = httpx.get(f"{url}/health", timeout=30).json()
        if h["kv_free_blocks"] == h["kv_blocks"] and h["num_running"] == 0 \
                and h["num_waiting"] == 0:
            return {**h, "all_free": True}
        if time.monotonic() - t0 > timeout_s:
            return {**h, "all_free": False}
        time.sleep(0.5)


def verdict(res: dict[str, Any], tol: float) -> tuple[bool, str]:
    growth = {k: res["rss_end_mb"][k] / v - 1 for k, v in res["rss_warm_mb"].items()
              if k in res["rss_end_mb"]}
    ok = res["failed"] == 0 and res["kv"]["all_free"] and all(g <= tol for g in growth.values())
    grown = ", ".join(f"{k} {res['rss_warm_mb'][k]:.0f}->{res['rss_end_mb'][k]:.0f} MB"
                      for k in growth)
    return ok, (f"soak {'PASS' if ok else 'FAIL'} | {res['clients']} clients x "
                f"{res['duration_s']:.0f} s: {res['requests']} requests ({res['complete']} "
                f"complete, {res['refused']} refused, {res['disconnected']} cut by clients, "
                f"{res['failed']} server errors), KV all free {res['kv']['all_free']}, RSS "
                f"{grown}; TTFT p50/p99 {res['ttft_ms_p50']:.0f}/{res['ttft_ms_p99']:.0f} ms, "
                f"ITL p50/p99 {res['itl_ms_p50']:.0f}/{res['itl_ms_p99']:.0f} ms")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    deploy.start_ray()
    name, cfg = deploy.yaml_args("local.yaml")
    url = deploy.deploy(cfg, name)
    pids = deploy.serve_pids(name)
    res = asyncio.run(soak(url, args, pids))
    res.update(kv=kv_free_after(url), rss_end_mb=rss_of(pids), clients=args.clients,
               duration_s=args.duration, pids=pids)
    ok, line = verdict(res, args.rss_tolerance)
    args.json.write_text(json.dumps(res, indent=1))
    print(line, flush=True)


if __name__ == "__main__":
    main()
