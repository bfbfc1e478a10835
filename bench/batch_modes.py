"""Each lossless mode's speed through a batch job's path (`python -m bench.batch_modes`).

One metered model-server app (ray_configs/batch.yaml, as `tandem batch` starts it), the same
seeded jobs (held-out prompts, `--max-tokens` each with ignore_eos) run with the mode fixed in
every body, at each `--windows` (requests in flight) and `--temperatures`. Per run: wall
time, milliseconds per output token per request (wall x window / output tokens), tokens per
forward (engine steps a request took part in, prefill apart), and where the time went: the
engine's step CPU (engine_step_cpu_s from the replica's health) against the time outside the
steps, per step. Steps are counted as the requests' decode forwards / window (the requests
of a run go in lockstep; exact at window 1). If the time outside the steps is the same per
step in every mode, it is paid per forward: speculation's extra forwards (two per linear
iteration) pay it again. Numbers: BENCHMARKS.md, "Batch jobs".
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.batch import CONFIGS, init_ray, run_job, yaml_args
from cluster.config import load_config
from models.heldout import load_prompts

MODES = {"ar": ("ar", None), "spec_linear/4": ("spec_linear", 4),
         "spec_quadratic/2": ("spec_quadratic", 2), "spec_quadratic/3": ("spec_quadratic", 3)}


def write_modes_job(path: Path, n: int, max_tokens: int, temperature: float,
                    mode: str | None, block: int | None) -> Path:
    prompts = load_prompts()
    with open(path, "w") as f:
        for i in range(n):
            body: dict[str, Any] = {"prompt": prompts[i % len(prompts)],
                                    "max_tokens": max_tokens, "temperature": temperature,
                                    "seed": i, "ignore_eos": True}
            if mode is not None:
                body["mode"] = mode
            if block is not None:
                body["block_length"] = block
            f.write(json.dumps({"custom_id": f"q{i}", "method": "POST",
                                "url": "/v1/completions", "body": body}) + "\n")
    return path


def one_run(handle: Any, tmp: Path, cfg: Path, name: str, window: int, temperature: float,
            args: argparse.Namespace) -> dict[str, Any]:
    mode, block = MODES[name]
    inp = write_modes_job(tmp / f"{name.replace('/', '_')}-{window}-{temperature}.jsonl",
                          window * args.per_window, args.max_tokens, temperature, mode, block)
    before = handle.health.remote().result()["engine_step_cpu_s"]
    s = run_job(inp, inp.with_suffix(".out"), "bench-modes", cfg, None, window)
    step_cpu = handle.health.remote().result()["engine_step_cpu_s"] - before
    decode = {m: v for m, v in s["modes"].items() if m != "prefill"}
    forwards = sum(v["forwards"] for v in decode.values())
    decode_tokens = sum(v["tokens"] for v in decode.values())
    tokens = s["output_tokens"]
    steps = max(1, forwards / window)
    run_s = s["run_s"]
    return {"mode": name, "window": window, "T": temperature, "run_s": run_s,
            "output_tokens": tokens, "ms_per_token_per_request": round(run_s * window / tokens
                                                                       * 1e3, 2),
            "tokens_per_forward": round(decode_tokens / max(1, forwards), 3),
            "device_per_output_token": s.get("device_tokens_per_output_token"),
            "steps": round(steps), "step_cpu_ms_per_step": round(step_cpu / steps * 1e3, 2),
            "outside_ms_per_step": round((run_s - step_cpu) / steps * 1e3, 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.batch_modes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, nargs="+", default=[1, 4])
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.8])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--per-window", type=int, default=6, help="requests per window slot")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from cluster.batch import replicas

    init_ray()
    tmp = Path(tempfile.mkdtemp())
    cfg = tmp / "batch.yaml"
    doc = yaml.safe_load((CONFIGS / "batch.yaml").read_text())
    doc["applications"][0]["args"] = yaml_args("batch.yaml", args.threads)
    cfg.write_text(yaml.safe_dump(doc))
    target = replicas.start_own(load_config(doc["applications"][0]["args"]), app="bench-modes")
    run_job(write_modes_job(tmp / "warm.jsonl", 8, 8, 0.8, None, None), tmp / "warm.out",
            "bench-modes", cfg, None, 4)
    rows = []
    start = time.monotonic()
    for temperature in args.temperatures:
        for window in args.windows:
            for name in args.modes:
                row = one_run(target.handle, tmp, cfg, name, window, temperature, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"{time.monotonic() - start:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
