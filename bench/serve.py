"""`tandem bench serve`: output tokens per second through the whole HTTP path (client ->
Serve proxy -> the app's deployments -> engine, streamed back as SSE) against the same
engine driven directly in this process, at each concurrency, as a ratio, in one run; and
where the serving stack's CPU goes, per process, in ms per streamed token.

Both sides run the same config (ray_configs/local.yaml by default), the same torch thread
count, first-come scheduling in one fixed mode (so both do the same forwards), greedy with
ignore_eos so every request makes exactly max_tokens tokens, and the same closed loop: C
clients, each sending its next request when the last one ends. Several serving layouts
(`--variants`, see VARIANTS) run side by side as separate apps; at each concurrency the
engine and every variant alternate, `--repeats` times, and the best run of each counts (the
machine is shared). CPU per token is read from /proc around each HTTP run (bench/proc_cpu.py)
and the best run's is shown; "stack" is the CPU of the processes on a token's path (proxy,
replicas, engine core) minus the CPU the server's own engine.step() calls took on their
thread in that run (its forwards, sampling and scheduling: /health's engine_step_cpu_s);
"vs alone" subtracts instead what the engine alone spent on the same tokens in this
process (noisier: another process, another time); the controller, Ray's daemons and the
client are shown apart. Each HTTP run also shows the client's mean time to first token beside
the server's own (from the request's arrival in the replica, and the part of it queued before
the first step, from /health): the difference is Serve's proxy, routing and the way back.
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

from bench.proc_cpu import cpu_seconds, serve_groups, snapshot
from bench.serve_clients import CLIENTS, RunResult, engine_run, http_run, percentile
from cluster.config import TandemConfig, load_config
from engine.engine import LLMEngine
from engine.params import Mode
from models.heldout import load_prompts

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "ray_configs" / "local.yaml"

# Serving layouts to compare (config overrides on top of the YAML's args).
VARIANTS: dict[str, dict[str, Any]] = {
    # The default: the API folded into the model server, the engine in its own process.
    "single": {},
    # single without the chunk cap (the tick stays at stream_interval_ms at any load).
    "single-nocap": {"model": {"stream_max_chunks_per_s": 0}},
    # single with the engine core's admission gate (cluster/admission_gate.py): newcomers to
    # a busy engine held up to 4 steps so that they join the batch together.
    "single-hold4": {"model": {"admit_hold_steps": 4}},
    # The API folded in, the engine a thread of the replica (sharing its GIL).
    "single-thread": {"model": {"engine_core": "thread"}},
    # single with the replica's code on the thread Serve starts for user code (Serve's
    # default; `single` runs it on the replica's own event loop, cluster/app.py).
    "single-userthread": {"model_server": {"ray_actor_options": {"runtime_env": {
        "env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1"}}}}},
    # The layout before 2026-12-03: ingress deployment -> model server, engine thread.
    "split-thread": {"layout": "split", "model": {"engine_core": "thread"}},
}


# Processes not on a token's path: their CPU is shown, not counted in "stack" (the
# controller's and Ray's own loops run at the same rate with no traffic at all).
BACKGROUND = ("bench (client)", "controller", "ray daemons")
ENGINE_STEP = "engine step"  # inside a replica's or the core's CPU, not a process


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tandem bench serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--requests", type=int, default=None,
                   help="requests per concurrency level (default: max(4, 2 x C))")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--mode", choices=[m.value for m in Mode if m is not Mode.AUTO],
                   default="ar")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads on both sides (default 1: with 2 threads on a busy "
                        "2-core box OpenMP barriers stall and the engine runs ~4x slower)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=["single", "split-thread"],
                   choices=list(VARIANTS))
    p.add_argument("--clients", nargs="+", default=["aiohttp"], choices=CLIENTS,
                   help="HTTP client(s) of the load generator (several: each variant runs "
                        "with each, named variant/client); its CPU is shown as bench (client)")
    p.add_argument("--engine-admit-per-step", type=int, default=0, metavar="N",
                   help="also run the engine alone admitting at most N new requests per step "
                        "(staggered, as requests reach a server) and report HTTP against it")
    p.add_argument("--serve-env", nargs="*", default=[], metavar="NAME=VALUE",
                   help="env vars for Serve's proxy (through controller_options) and every "
                        "replica, on top of the config YAML's (e.g. Serve's RAY_SERVE_* options)")
    p.add_argument("--stream-interval-ms", type=float, default=None,
                   help="override the config's stream_interval_ms")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def bench_config(path: Path, threads: int, stream_interval_ms: float | None = None,
                 variant: dict[str, Any] | None = None) -> TandemConfig:
    args = yaml.safe_load(path.read_text())["applications"][0]["args"]
    model = {"policy": "first_come", "torch_threads": threads}
    if stream_interval_ms is not None:
        model["stream_interval_ms"] = stream_interval_ms
    args = _merge(_merge(args, variant or {}), {"model": model, "api_keys": []})
    return load_config(args)


def serve_env(path: Path, extra: dict[str, str]) -> dict[str, Any]:
    """The YAML's controller_options (the proxy inherits the controller's environment: the
    stream guard, Serve's proxy options), with extra env vars on top."""
    opts = yaml.safe_load(path.read_text()).get("controller_options") or {}
    return _merge(opts, {"runtime_env": {"env_vars": extra}}) if extra else opts


def start_serve(controller_options: dict[str, Any]) -> int:
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", include_dashboard=False, ignore_reinit_error=True,
             log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                controller_options=controller_options)
    return port


def start_app(config: TandemConfig, port: int, name: str) -> str:
    """serve.run one variant under /<name>; returns its base URL once it answers."""
    import httpx
    from ray import serve

    from cluster.app import make_app

    serve.run(make_app(config), name=name, route_prefix=f"/{name}")
    url = f"http://127.0.0.1:{port}/{name}"
    httpx.get(f"{url}/health", timeout=120).raise_for_status()
    return url


def settle(urls: list[str], seconds: float = 3.0) -> None:
    """Let the servers finish starting before anything is timed: the first request starts
    each replica's metrics pusher and the metrics-board actor (a new process, ~1 s of CPU
    on this VM), which would otherwise land in the first timed run."""
    import httpx

    for url in urls:
        httpx.get(f"{url}/metrics", timeout=60).raise_for_status()
    time.sleep(seconds)


# --- the run ---------------------------------------------------------------------------------


def _lat(res: RunResult) -> dict[str, float]:
    ms = 1e3
    server = {} if res.server_ttft_mean_s is None else {
        "ttft_mean_ms": round(sum(res.ttft_s) / max(1, len(res.ttft_s)) * ms, 1),
        "server_ttft_mean_ms": round(res.server_ttft_mean_s * ms, 1),
        "server_queue_mean_ms": round(res.server_queue_mean_s * ms, 1)}
    return {**server, "ttft_p50_ms": round(percentile(res.ttft_s, 50) * ms, 1),
            "ttft_p99_ms": round(percentile(res.ttft_s, 99) * ms, 1),
            "itl_p50_ms": round(percentile(res.gaps_s, 50) * ms, 1),
            "itl_p99_ms": round(percentile(res.gaps_s, 99) * ms, 1),
            # tokens per output that carried text (an SSE chunk; an engine step's output)
            "tokens_per_chunk": round(res.tokens / max(1, len(res.ttft_s) + len(res.gaps_s)),
                                      2)}


HEALTH_SUMS = ("engine_step_cpu_s", "ttft_total_s", "num_first_tokens", "queue_total_s",
               "num_queued")


def _server_sums(url: str) -> dict[str, float]:
    """The server's running sums (its /health): the CPU seconds its engine.step() calls took,
    and its own time to first token and queue time (from the request's arrival in the
    replica), to compare with what the client saw."""
    import httpx

    health = httpx.get(f"{url}/health", timeout=60).json()
    return {k: health[k] for k in HEALTH_SUMS}


def _http_once(url: str, batch: list[str], c: int, args: argparse.Namespace, groups: list,
               client: str) -> tuple[RunResult, dict[str, float]]:
    """One closed-loop run: its result and CPU ms per token by process group, plus
    "engine step": the server's own engine.step() CPU in that run."""
    sums0, before = _server_sums(url), snapshot(groups)
    res = asyncio.run(http_run(url, batch, c, args.max_tokens, args.mode, client))
    after, sums1 = snapshot(groups), _server_sums(url)
    d = {k: sums1[k] - sums0[k] for k in HEALTH_SUMS}
    cpu = {k: (after[k] - before[k]) * 1e3 / max(1, res.tokens) for k in after}
    cpu[ENGINE_STEP] = d["engine_step_cpu_s"] * 1e3 / max(1, res.tokens)
    res.server_ttft_mean_s = d["ttft_total_s"] / max(1, d["num_first_tokens"])
    res.server_queue_mean_s = d["queue_total_s"] / max(1, d["num_queued"])
    return res, cpu


def measure_level(engine: LLMEngine, urls: dict[str, str], groups: dict[str, list],
                  args: argparse.Namespace, c: int, prompts: list[str]) -> dict[str, Any]:
    n = args.requests or max(4, 2 * c)
    batch = [prompts[i % len(prompts)] for i in range(n)]
    mode = Mode(args.mode)
    best_e: tuple[RunResult, float] | None = None
    best_s: tuple[RunResult, float] | None = None  # the staggered engine, if asked
    best_h: dict[str, tuple[RunResult, dict[str, float]]] = {}
    paired: dict[str, list[float]] = {}  # per repeat: HTTP over the engine run just before
    for _ in range(args.repeats):
        res, engine_ms = _engine_once(engine, batch, c, args.max_tokens, mode, 0)
        if best_e is None or res.tok_s > best_e[0].tok_s:
            best_e = (res, engine_ms)
        if args.engine_admit_per_step:
            s = _engine_once(engine, batch, c, args.max_tokens, mode,
                             args.engine_admit_per_step)
            best_s = s if best_s is None or s[0].tok_s > best_s[0].tok_s else best_s
        for name, variant, client in _runs(urls, args.clients):
            h, cpu = _http_once(urls[variant], batch, c, args, groups[variant], client)
            if h.tokens != res.tokens:
                raise RuntimeError(f"{name}: HTTP made {h.tokens} tokens, the engine "
                                   f"{res.tokens}")
            paired.setdefault(name, []).append(round(h.tok_s / res.tok_s, 3))
            if name not in best_h or h.tok_s > best_h[name][0].tok_s:
                best_h[name] = (h, cpu)
    e, engine_ms = best_e
    row: dict[str, Any] = {"concurrency": c, "requests": n, "engine_tok_s": round(e.tok_s, 1),
                           "engine_cpu_ms_per_token": round(engine_ms, 3), "engine": _lat(e)}
    print(f"  C={c:<3} engine {e.tok_s:7.1f} tok/s, {engine_ms:.2f} CPU ms/token  "
          f"{_fmt_lat(row['engine'])}", flush=True)
    if best_s is not None:
        row["engine_staggered"] = {"admit_per_step": args.engine_admit_per_step,
                                   "tok_s": round(best_s[0].tok_s, 1),
                                   "cpu_ms_per_token": round(best_s[1], 3), **_lat(best_s[0])}
        print(f"        engine, {args.engine_admit_per_step} admitted per step: "
              f"{best_s[0].tok_s:7.1f} tok/s, {best_s[1]:.2f} CPU ms/token  "
              f"{_fmt_lat(row['engine_staggered'])}", flush=True)
    for name, (h, cpu) in best_h.items():
        path = sum(v for k, v in cpu.items() if k not in (*BACKGROUND, ENGINE_STEP))
        stack, vs_alone = path - cpu[ENGINE_STEP], path - engine_ms
        row[name] = {"http_tok_s": round(h.tok_s, 1), "ratio": round(h.tok_s / e.tok_s, 3),
                     "ratios_paired": paired[name],
                     "cpu_ms_per_token": {k: round(v, 3) for k, v in cpu.items()},
                     "stack_cpu_ms_per_token": round(stack, 3),
                     "stack_vs_engine_alone_ms_per_token": round(vs_alone, 3), **_lat(h)}
        if best_s is not None:
            row[name]["ratio_vs_staggered"] = round(h.tok_s / best_s[0].tok_s, 3)
        procs = "  ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        vs_s = f" (vs staggered {h.tok_s / best_s[0].tok_s:.3f})" if best_s else ""
        print(f"        {name:<8} HTTP {h.tok_s:7.1f} tok/s  ratio {h.tok_s / e.tok_s:.3f}{vs_s} "
              f"(per repeat {', '.join(f'{r:.3f}' for r in paired[name])})  "
              f"stack {stack:.2f} (vs alone {vs_alone:.2f}) CPU ms/token  "
              f"{_fmt_lat(row[name])}\n"
              f"                 CPU ms/token: {procs}", flush=True)
    return row


def _engine_once(engine: LLMEngine, batch: list[str], c: int, max_tokens: int, mode: Mode,
                 admit_per_step: int) -> tuple[RunResult, float]:
    """One closed loop over the engine in this process: its result and CPU ms per token."""
    t0 = cpu_seconds(os.getpid())
    res = engine_run(engine, batch, c, max_tokens, mode, admit_per_step)
    return res, (cpu_seconds(os.getpid()) - t0) * 1e3 / max(1, res.tokens)


def _runs(urls: dict[str, str], clients: list[str]) -> list[tuple[str, str, str]]:
    """(name, variant, client) of each HTTP run of a repeat."""
    return [(v if len(clients) == 1 else f"{v}/{c}", v, c) for v in urls for c in clients]


def _fmt_lat(lat: dict[str, float]) -> str:
    server = "" if "server_ttft_mean_ms" not in lat else (
        f"TTFT mean {lat['ttft_mean_ms']} (in the server {lat['server_ttft_mean_ms']}, queued "
        f"{lat['server_queue_mean_ms']}) ms  ")
    return (server + f"TTFT p50/p99 {lat['ttft_p50_ms']}/{lat['ttft_p99_ms']} ms  "
            f"gap p50/p99 {lat['itl_p50_ms']}/{lat['itl_p99_ms']} ms  "
            f"{lat['tokens_per_chunk']} tokens/chunk")


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    extra_env = dict(kv.split("=", 1) for kv in args.serve_env)
    replica_env = {"model_server": {"ray_actor_options": {"runtime_env": {
        "env_vars": extra_env}}}} if extra_env else {}
    configs = {v: bench_config(args.config, args.threads, args.stream_interval_ms,
                               _merge(replica_env, VARIANTS[v])) for v in args.variants}
    if any(c.model.tp != 1 for c in configs.values()):
        raise SystemExit("tandem bench serve: compares with the in-process engine (tp = 1)")
    from cluster.model_server import build_engine

    engine = build_engine(next(iter(configs.values())))
    prompts = load_prompts(next(iter(configs.values())).model.model_dir, 32)
    port = start_serve(serve_env(args.config, extra_env))
    urls = {v: start_app(cfg, port, v) for v, cfg in configs.items()}
    groups = {v: serve_groups(v) for v in urls}
    engine_run(engine, prompts[:2], 2, 4, Mode(args.mode))  # warm every side
    for url in urls.values():
        for client in args.clients:
            asyncio.run(http_run(url, prompts[:2], 2, 4, args.mode, client))
    settle(list(urls.values()))
    print(f"tandem bench serve: mode {args.mode}, max_tokens {args.max_tokens}, torch threads "
          f"{args.threads}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, variants "
          f"{', '.join(urls)}, clients {', '.join(args.clients)}", flush=True)
    try:
        rows = [measure_level(engine, urls, groups, args, c, prompts)
                for c in args.concurrency]
    finally:
        from ray import serve

        serve.shutdown()
    result = {"mode": args.mode, "max_tokens": args.max_tokens, "threads": args.threads,
              "cpus": os.cpu_count(), "device": configs[args.variants[0]].model.device,
              "variants": {v: VARIANTS[v] for v in urls}, "clients": args.clients,
              "serve_env": extra_env, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
