"""`tandem bench serve`: output tokens per second through the whole HTTP path (client ->
Serve proxy -> ingress -> model server -> engine, streamed back as SSE) against the same
engine driven directly in this process, at each concurrency, as a ratio, in one run.

Both sides run the same config (ray_configs/local.yaml by default), the same torch thread
count, first-come scheduling in one fixed mode (so both do the same forwards), greedy with
ignore_eos so every request makes exactly max_tokens tokens, and the same closed loop: C
clients, each sending its next request when the last one ends. The engine and the HTTP runs
alternate, `--repeats` times, and the best run of each counts (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from cluster.config import TandemConfig, load_config
from engine.engine import LLMEngine
from engine.params import DecodeParams, Mode, SamplingParams
from models.heldout import load_prompts

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "ray_configs" / "local.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tandem bench serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--requests", type=int, default=None,
                   help="requests per concurrency level (default: max(4, 2 x C))")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--mode", choices=[m.value for m in Mode if m is not Mode.AUTO],
                   default="ar")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads on both sides (default 1: with 2 threads on a busy "
                        "2-core box OpenMP barriers stall and the engine runs ~4x slower)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stream-interval-ms", type=float, default=None,
                   help="override the config's stream_interval_ms")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def bench_config(path: Path, threads: int, stream_interval_ms: float | None = None
                 ) -> TandemConfig:
    args = yaml.safe_load(path.read_text())["applications"][0]["args"]
    model = {**args.get("model", {}), "policy": "first_come", "torch_threads": threads}
    if stream_interval_ms is not None:
        model["stream_interval_ms"] = stream_interval_ms
    return load_config({**args, "model": model, "api_keys": []})


# --- the engine alone ------------------------------------------------------------------------


def engine_run(engine: LLMEngine, prompts: list[str], concurrency: int, max_tokens: int,
               mode: Mode) -> tuple[int, float]:
    """Closed loop over the engine: C requests in flight. (tokens, seconds)."""
    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0, ignore_eos=True)
    dp = DecodeParams(mode=mode)
    todo = list(prompts)
    tokens, in_flight = 0, 0
    start = time.perf_counter()
    while todo or in_flight:
        while todo and in_flight < concurrency:
            engine.add_request(todo.pop(0), sp, dp)
            in_flight += 1
        for out in engine.step():
            if out.finished:
                tokens += len(out.token_ids)
                in_flight -= 1
    return tokens, time.perf_counter() - start


# --- through HTTP ----------------------------------------------------------------------------


async def _one(client: Any, url: str, prompt: str, max_tokens: int, mode: str) -> int:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "seed": 0,
            "ignore_eos": True, "mode": mode, "stream": True,
            "stream_options": {"include_usage": True}}
    tokens = 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
    return tokens


async def http_run(url: str, prompts: list[str], concurrency: int, max_tokens: int,
                   mode: str) -> tuple[int, float]:
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    total = 0
    limits = httpx.Limits(max_connections=concurrency + 4)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal total
        while not queue.empty():
            n = await _one(client, url, queue.get_nowait(), max_tokens, mode)
            total += n  # not `total += await ...`: that reads total before the await

    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return total, time.perf_counter() - start


def start_server(config: TandemConfig) -> str:
    import ray
    from ray import serve

    from cluster.app import make_app

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(make_app(config), name="bench-serve", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def settle(url: str, seconds: float = 3.0) -> None:
    """Let the server finish starting before anything is timed: the first request starts
    the replica's metrics pusher and the metrics-board actor (a new process, ~1 s of CPU
    on this VM), which would otherwise land in the first timed run."""
    import httpx

    httpx.get(f"{url}/metrics", timeout=60).raise_for_status()
    time.sleep(seconds)


# --- the run ---------------------------------------------------------------------------------


def measure(engine: LLMEngine, url: str, args: argparse.Namespace, prompts: list[str]
            ) -> list[dict[str, Any]]:
    rows = []
    mode = Mode(args.mode)
    for c in args.concurrency:
        n = args.requests or max(4, 2 * c)
        batch = [prompts[i % len(prompts)] for i in range(n)]
        best_e = best_h = 0.0
        for _ in range(args.repeats):
            tok, sec = engine_run(engine, batch, c, args.max_tokens, mode)
            best_e = max(best_e, tok / sec)
            tok_h, sec_h = asyncio.run(http_run(url, batch, c, args.max_tokens, args.mode))
            if tok_h != tok:
                raise RuntimeError(f"HTTP made {tok_h} tokens, the engine {tok}")
            best_h = max(best_h, tok_h / sec_h)
        rows.append({"concurrency": c, "requests": n, "engine_tok_s": round(best_e, 1),
                     "http_tok_s": round(best_h, 1), "ratio": round(best_h / best_e, 3)})
        print(f"  C={c:<3} engine {best_e:8.1f} tok/s   HTTP {best_h:8.1f} tok/s   "
              f"ratio {best_h / best_e:.3f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    threads = args.threads
    torch.set_num_threads(threads)
    config = bench_config(args.config, threads, args.stream_interval_ms)
    if config.model.tp != 1:
        raise SystemExit("tandem bench serve: compares with the in-process engine (tp = 1)")
    from cluster.model_server import build_engine

    engine = build_engine(config)
    prompts = load_prompts(config.model.model_dir, 32)
    url = start_server(config)
    engine_run(engine, prompts[:2], 2, 4, Mode(args.mode))  # warm both sides
    asyncio.run(http_run(url, prompts[:2], 2, 4, args.mode))
    settle(url)
    print(f"tandem bench serve: mode {args.mode}, max_tokens {args.max_tokens}, torch threads "
          f"{threads}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}", flush=True)
    try:
        rows = measure(engine, url, args, prompts)
    finally:
        from ray import serve

        serve.shutdown()
    result = {"mode": args.mode, "max_tokens": args.max_tokens, "threads": threads,
              "cpus": os.cpu_count(), "device": config.model.device, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
