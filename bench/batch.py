"""Batch-job benchmarks (`python -m bench.batch deadline|online`), numbers in BENCHMARKS.md.

deadline: one metered model-server app (ray_configs/batch.yaml, the replicas `tandem batch`
  starts itself), the same seeded job (held-out prompts, `--temperature`, mode auto) run
  with a generous and then a tight deadline (`--tight-factor` x that generous run's wall
  time), `--repeats` pairs, `--window` requests in flight at least, `--max-in-flight` at
  most (default: the window).
  Reports whether each met its deadline, the levers the job moved (more in flight,
  speculation) and the device work: tokens put through the model (decode, prefill apart)
  per output token, counted by the replica's executor meter.
online: ray_configs/local.yaml served over HTTP; closed-loop streaming clients with a TTFT
  and TPOT SLO, first alone, then while a `tandem batch --app tandem` job runs on the same
  replica (its own process, priority -1), then with the batch at the online priority (0).
  Reports the online requests' SLO attainment and latency in each phase and the batch's
  throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from actors.free_port import free_port
from cluster import cpu_placement
from cluster.config import load_config
from models.heldout import load_prompts

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "ray_configs"


def write_job(path: Path, n: int, max_tokens: int, offset: int = 0,
              temperature: float = 0.8) -> Path:
    prompts = load_prompts()
    with open(path, "w") as f:
        for i in range(n):
            body = {"prompt": prompts[(i + offset) % len(prompts)], "max_tokens": max_tokens,
                    "temperature": temperature, "seed": i, "ignore_eos": True}
            f.write(json.dumps({"custom_id": f"q{i}", "method": "POST",
                                "url": "/v1/completions", "body": body}) + "\n")
    return path


def yaml_args(name: str, threads: int) -> dict[str, Any]:
    args = yaml.safe_load((CONFIGS / name).read_text())["applications"][0]["args"]
    return {**args, "model": {**args["model"], "torch_threads": threads}}


def init_ray() -> Any:
    cpu_placement.ray_start_env(auth_off=True)  # engines at nice 0, as `tandem batch` runs them
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    return ray


# --- deadline: generous vs tight -------------------------------------------------------------


def run_job(inp: Path, out: Path, app: str, config: Path, deadline: float | None,
            window: int, max_in_flight: int | None = None) -> dict[str, Any]:
    from cluster.batch.cmd import parse_args
    from cluster.batch.job import BatchJob

    argv = ["--input", str(inp), "--output", str(out), "--app", app, "--config", str(config),
            "--window", str(window), "--max-in-flight", str(max_in_flight or window),
            "--no-progress", "--json"]
    if deadline is not None:
        argv += ["--deadline", f"{deadline}s"]
    job = BatchJob(parse_args(argv), time.monotonic())
    job.run()
    assert job.summary is not None
    return job.summary


def deadline_bench(args: argparse.Namespace) -> dict[str, Any]:
    from cluster.batch import replicas

    init_ray()
    cfg_path = Path(tempfile.mkdtemp()) / "batch.yaml"
    doc = yaml.safe_load((CONFIGS / "batch.yaml").read_text())
    doc["applications"][0]["args"] = yaml_args("batch.yaml", args.threads)
    cfg_path.write_text(yaml.safe_dump(doc))
    replicas.start_own(load_config(doc["applications"][0]["args"]), app="bench-batch")
    tmp = cfg_path.parent
    run_job(write_job(tmp / "warm.jsonl", 8, 8), tmp / "warm.out", "bench-batch", cfg_path,
            None, args.window)
    inp = write_job(tmp / "job.jsonl", args.requests, args.max_tokens,
                    temperature=args.temperature)
    rows = {}
    cap = args.max_in_flight or args.window
    for r in range(args.repeats):  # pairs side by side: the machine's speed drifts
        generous = run_job(inp, tmp / f"generous{r}.out", "bench-batch", cfg_path,
                           args.generous, args.window, cap)
        rows[f"generous #{r + 1}"] = _row(generous, args.window)
        tight_s = round(generous["wall_s"] * args.tight_factor, 1)
        rows[f"tight #{r + 1}"] = _row(run_job(inp, tmp / f"tight{r}.out", "bench-batch",
                                               cfg_path, tight_s, args.window, cap),
                                       args.window)
    return rows


def _row(s: dict[str, Any], base: int) -> dict[str, Any]:
    modes = {m: v["tokens"] for m, v in s["modes"].items() if m != "prefill"}
    used = s.get("max_in_flight_used", base)
    levers = ([f"in flight {base}->{used}"] if used > base else []) + (
        ["speculation"] if set(modes) - {"ar"} else [])
    return {"deadline_s": s["deadline_s"], "wall_s": s["wall_s"], "met": s["met_deadline"],
            "levers": " + ".join(levers) or "none", "moves": s.get("pace_moves"),
            "output_tokens": s["output_tokens"], "behind_option": s.get("behind_option"),
            "fast_paid": s.get("fast_paid"),
            "device_per_output_token": s.get("device_tokens_per_output_token"),
            "device_tokens": s.get("device_tokens"), "tokens_by_mode": modes}


# --- online traffic beside a batch job -------------------------------------------------------


async def _stream(client: Any, url: str, prompt: str, args: argparse.Namespace
                  ) -> tuple[int, float | None, float | None]:
    """(status, ttft s, tpot s) of one streamed completion."""
    body = {"prompt": prompt, "max_tokens": args.online_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True,
            "slo": {"ttft_ms": args.ttft_ms, "tpot_ms": args.tpot_ms}}
    start = time.perf_counter()
    first = last = None
    async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return resp.status_code, None, None
        async for line in resp.aiter_lines():
            if line.startswith("data: {") and '"text":""' not in line:
                last = time.perf_counter()
                first = first or last
    if first is None or last is None:
        return 200, None, None
    return 200, first - start, (last - first) / max(1, args.online_tokens - 1)


async def online_load(url: str, seconds: float, args: argparse.Namespace
                      ) -> list[tuple[int, float | None, float | None]]:
    import httpx

    prompts = load_prompts()
    out: list[tuple[int, float | None, float | None]] = []
    stop = time.perf_counter() + seconds

    async def client_loop(c: httpx.AsyncClient, k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            out.append(await _stream(c, url, prompts[i % len(prompts)], args))
            i += args.clients

    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(client_loop(client, k) for k in range(args.clients)))
    return out


def _online_row(results: list[tuple[int, float | None, float | None]],
                args: argparse.Namespace) -> dict[str, Any]:
    ok = [(t, p) for s, t, p in results if s == 200 and t is not None and p is not None]
    met = [t * 1e3 <= args.ttft_ms and p * 1e3 <= args.tpot_ms for t, p in ok]

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3, 1) if xs else float("nan")

    ttft, tpot = [t for t, _ in ok], [p for _, p in ok]
    return {"requests": len(results), "refused": len(results) - len(ok),
            "attainment": round(sum(met) / max(1, len(results)), 3),
            "ttft_p50_ms": pct(ttft, 0.5), "ttft_p90_ms": pct(ttft, 0.9),
            "tpot_p50_ms": pct(tpot, 0.5), "tpot_p90_ms": pct(tpot, 0.9)}


def online_bench(args: argparse.Namespace) -> dict[str, Any]:
    from ray import serve

    from cluster.app import make_app

    ray = init_ray()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(make_app(load_config(yaml_args("local.yaml", args.threads))), name="tandem",
              route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    asyncio.run(online_load(url, 5, args))  # warm-up
    rows = {"online alone": _online_row(asyncio.run(online_load(url, args.seconds, args)),
                                        args)}
    tmp = Path(tempfile.mkdtemp())
    inp = write_job(tmp / "job.jsonl", args.requests, args.max_tokens)
    for name, priority in (("beside batch, priority -1", -1), ("beside batch, priority 0", 0)):
        out = tmp / f"out{priority}.jsonl"
        cmd = [sys.executable, "-m", "cluster.cli", "batch", "--input", str(inp), "--output",
               str(out), "--address", ray.get_runtime_context().gcs_address, "--app",
               "tandem", "--priority", str(priority), "--max-in-flight", str(args.window),
               "--no-progress", "--json"]
        job = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               stderr=subprocess.DEVNULL, env={**os.environ,
                                                               "PYTHONPATH": str(ROOT)})
        while not out.exists() or not out.read_text():  # the batch is running
            time.sleep(0.2)
        row = _online_row(asyncio.run(online_load(url, args.seconds, args)), args)
        row["batch_lines_meanwhile"] = len(out.read_text().splitlines())
        job.terminate()
        job.wait()
        row["batch_tokens_per_s"] = round(row["batch_lines_meanwhile"] * args.max_tokens
                                          / args.seconds, 1)
        rows[name] = row
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["deadline", "online"])
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--window", type=int, default=4, help="batch requests in flight (at least)")
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="deadline: requests in flight at most (default: --window)")
    p.add_argument("--temperature", type=float, default=0.8, help="deadline: the job's")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--generous", type=float, default=600.0, help="seconds")
    p.add_argument("--tight-factor", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clients", type=int, default=2, help="online closed-loop clients")
    p.add_argument("--seconds", type=float, default=30.0, help="online measuring window")
    p.add_argument("--online-tokens", type=int, default=32)
    p.add_argument("--ttft-ms", type=float, default=1000.0)
    p.add_argument("--tpot-ms", type=float, default=100.0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = deadline_bench(args) if args.which == "deadline" else online_bench(args)
    for name, row in rows.items():
        print(f"{name:<28} {json.dumps(row)}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
