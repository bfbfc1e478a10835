"""`tandem bench serve`: output tokens per second through the whole HTTP path (client ->
Serve proxy -> the app's deployments -> engine, streamed back as SSE) against the same
engine driven directly in this process, at each concurrency, as a ratio, in one run; and
where the serving stack's CPU goes, per process, in ms per streamed token.

Both sides run the same config (ray_configs/local.yaml by default), the same torch thread
count, first-come scheduling in one fixed mode (so both do the same forwards), greedy with
ignore_eos so every request makes exactly max_tokens tokens, and the same closed loop: C
clients, each sending its next request when the last one ends. Several serving layouts
(`--variants`, see VARIANTS) run side by side as separate apps; at each concurrency the
engine and every variant alternate, `--repeats` rounds, and a variant's figure is the median
of its per-round ratios (HTTP over the engine runs just before and after it) with their
range (the machine is shared: bench/serve_level.py). The engine alone runs on the CPUs
and at the niceness the config gives the engine core; the client keeps off the core's CPUs.
CPU per token is read from /proc around each HTTP run (bench/proc_cpu.py) and the median
round's is shown; "stack" is the CPU of the
processes on a token's path (proxy, replicas, engine core) minus the CPU the server's own
engine.step() calls took on their thread in that run (its forwards, sampling and
scheduling: /health's engine_step_cpu_s);
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
import time
from pathlib import Path
from typing import Any

import yaml

from actors.free_port import free_port
from bench.proc_cpu import serve_groups
from bench.serve_clients import CLIENTS, engine_run, http_run
from bench.serve_level import Placement, measure_level
from cluster import cpu_placement
from cluster.config import TandemConfig, load_config
from engine.params import Mode
from models.heldout import load_prompts

ON_PATH = ("proxy", "ModelServer", "OpenAIIngress", "engine core")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "ray_configs" / "local.yaml"

# Serving layouts to compare (config overrides on top of the YAML's args).
VARIANTS: dict[str, dict[str, Any]] = {
    # The default: the API folded into the model server, the engine in its own process.
    "single": {},
    # single without the chunk cap (the tick stays at stream_interval_ms at any load).
    "single-nocap": {"model": {"stream_max_chunks_per_s": 0}},
    # single with the replica fetching the request body back from the proxy (a Ray call), as
    # before cluster/inline_body.py, though the proxy carries it with the request.
    "single-fetch": {"model_server": {"ray_actor_options": {"runtime_env": {
        "env_vars": {"TANDEM_INLINE_BODY": "0"}}}}},
    # single with Serve's own channel from the replica back to the proxy for every request
    # (a GCS lookup and a Ray call), as before cluster/proxy_receive.py.
    "single-serve-receive": {"model_server": {"ray_actor_options": {"runtime_env": {
        "env_vars": {"TANDEM_PROXY_RECEIVE": "0"}}}}},
    # single with the engine core and the replica sharing every CPU, as before 2026-12-04
    # (local.yaml pins the core alone to the last CPU: cluster/cpu_placement.py core_cpus).
    "single-shared": {"model": {"engine_core_cpus": None}},
    # single with the engine core at its replica's niceness (the bench Ray's
    # --worker-niceness), as before 2026-12-03's seventh session, instead of nice 0.
    "single-core-inherit": {"model": {"engine_core_nice": None}},
    # single with the engine core ranked above the rest (nice -5, needs CAP_SYS_NICE).
    "single-core-nice-5": {"model": {"engine_core_nice": -5}},
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
    p.add_argument("--worker-niceness", type=int, default=cpu_placement.SERVING_WORKER_NICE,
                   help="niceness of the Ray workers (proxy, replicas and the engine cores "
                        "they spawn) in the bench's Ray: 0 as `tandem serve` starts them; 15 "
                        "is Ray's own default")
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


def start_serve(controller_options: dict[str, Any], worker_nice: int) -> int:
    os.environ[cpu_placement.RAY_NICE_ENV] = str(worker_nice)  # this run's, over the default
    cpu_placement.ray_start_env()
    import ray
    from ray import serve

    ray.init(address="local", include_dashboard=False, ignore_reinit_error=True,
             log_to_driver=False)
    port = free_port()
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

    base = bench_config(args.config, args.threads, args.stream_interval_ms).model
    alone = Placement(cpu_placement.core_cpus(base.engine_core_cpus, base.torch_threads),
                      base.engine_core_nice)
    engine = build_engine(next(iter(configs.values())))
    prompts = load_prompts(next(iter(configs.values())).model.model_dir, 32)
    port = start_serve(serve_env(args.config, extra_env), args.worker_niceness)
    urls = {v: start_app(cfg, port, v) for v, cfg in configs.items()}
    groups = {v: serve_groups(v) for v in urls}
    engine_run(engine, prompts[:2], 2, 4, Mode(args.mode))  # warm every side
    for url in urls.values():
        for client in args.clients:
            asyncio.run(http_run(url, prompts[:2], 2, 4, args.mode, client))
    settle(list(urls.values()))
    print(f"tandem bench serve: mode {args.mode}, max_tokens {args.max_tokens}, torch threads "
          f"{args.threads}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, variants "
          f"{', '.join(urls)}, clients {', '.join(args.clients)}; the engine alone on "
          f"{alone.describe()}", flush=True)
    for v, gs in groups.items():  # where each serving process may run, at what niceness
        print(f"  {v}: CPUs (nice) " + ", ".join(
            f"{g.name} {sorted(os.sched_getaffinity(g.pids[0]))} "
            f"({os.getpriority(os.PRIO_PROCESS, g.pids[0])})"
            for g in gs if g.name in (*ON_PATH, "controller")), flush=True)
    try:
        rows = [measure_level(engine, urls, groups, args, c, prompts, alone)
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
