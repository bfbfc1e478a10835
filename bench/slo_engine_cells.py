"""#12's CPU-engine target, one cell at a time: `auto` against every fixed lossless mode on
the real engine in wall-clock time (bench/slo_engine.py), N requests per run, every policy
on the same requests, one (workload, load, seed) per call so that each call fits a short
quiet window; results accumulate in one JSON file, and `summary` prints the table.

  python -m bench.slo_engine_cells run --workload mixed --load high --seed 0 \
      [--requests 100] [--out bench/slo_engine_cells.json]
  python -m bench.slo_engine_cells summary [--out FILE]

Per cell the summary shows each policy's goodput (requests that met every SLO bound per
second) as the mean over seeds with the spread (min-max), and auto over the best fixed
mode: the ratio of the means, and the lowest per-seed ratio. Load average before each run
and the machine's slowdown against the profile (EngineBench.slowdown: SLOs and arrival
rates are scaled by it) are recorded per run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench.slo import PROFILE, _row, policy_config
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.workloads import LOADS, WORKLOADS, capacity_rps, generate

OUT = Path(__file__).with_name("slo_engine_cells.json")
POLICIES = ("auto", "ar", "spec_linear", "spec_quadratic")


def run_cell(workload: str, load: str, seed: int, num_requests: int, out: Path,
             threads: int, policies: tuple[str, ...] = POLICIES) -> None:
    import torch

    from bench.slo_engine import EngineBench, ScaledCost

    torch.set_num_threads(threads)
    profile = Profile.load(PROFILE)
    load_avg = os.getloadavg()[0]
    bench = EngineBench()
    base = SLOPolicy(profile).cost
    slowdown = bench.slowdown(base)
    cost = ScaledCost(base, slowdown)
    rate = LOADS[load] * capacity_rps(WORKLOADS[workload], cost)
    specs = generate(WORKLOADS[workload], rate, num_requests, cost, len(bench.prompts),
                     seed=100 + seed)
    rows = []
    for name in policies:
        t0 = time.monotonic()
        results = bench.run(specs, profile, policy_config(name))
        row = _row("engine", workload, load, name, results, rate) | {
            "seed": seed, "slowdown": round(slowdown, 3), "load_avg": round(load_avg, 2),
            "wall_s": round(time.monotonic() - t0, 1),
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        rows.append(row)
        print(f"{workload}/{load}/seed {seed} {name}: attainment {row['attainment']:.2f} "
              f"goodput {row['goodput']:.3f} ({row['wall_s']} s)", flush=True)
    old = json.loads(out.read_text()) if out.exists() else {"runs": []}
    keep = [r for r in old["runs"] if (r["workload"], r["load"], r["seed"], r["policy"])
            not in {(workload, load, seed, p) for p in policies}]
    out.write_text(json.dumps({"runs": keep + rows}, indent=1) + "\n")


def summary(out: Path) -> str:
    runs = json.loads(out.read_text())["runs"]
    cells: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for r in runs:
        cells.setdefault((r["workload"], r["load"]), {}).setdefault(
            r["policy"], {})[r["seed"]] = r["goodput"]
    order = list(LOADS)
    lines = [f"{'workload':<12}{'load':<12}{'seeds':>6}  " + "".join(
        f"{p:>22}" for p in POLICIES) + f"{'auto/best':>11}{'min/seed':>10}"]
    for (workload, load), by in sorted(cells.items(), key=lambda c: (c[0][0],
                                                                      order.index(c[0][1]))):
        seeds = sorted(set.intersection(*(set(by.get(p, {})) for p in POLICIES)))
        if not seeds:
            continue
        cols, means = [], {}
        for p in POLICIES:
            values = [by[p][s] for s in seeds]
            means[p] = statistics.fmean(values)
            cols.append(f"{means[p]:7.3f} ({min(values):.2f}-{max(values):.2f})")
        best = max(means[p] for p in POLICIES[1:])
        ratio = means["auto"] / best if best > 0 else float("inf")
        per_seed = min((by["auto"][s] / max(by[p][s] for p in POLICIES[1:])
                        if max(by[p][s] for p in POLICIES[1:]) > 0 else float("inf"))
                       for s in seeds)
        line = (f"{workload:<12}{load:<12}{len(seeds):>6}  "
                + "".join(f"{c:>22}" for c in cols) + f"{ratio:>10.2f}x{per_seed:>9.2f}x")
        full = {s: by["auto_full"][s] for s in seeds if s in by.get("auto_full", {})}
        if full:
            line += f"   auto_full {statistics.fmean(full.values()):.3f} (seeds {sorted(full)})"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slo_engine_cells",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--workload", choices=list(WORKLOADS), required=True)
    r.add_argument("--load", choices=list(LOADS), required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--requests", type=int, default=100)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--policies", default=",".join(POLICIES),
                   help="comma-separated; auto_full = auto with the decision cache off")
    r.add_argument("--out", type=Path, default=OUT)
    s = sub.add_parser("summary")
    s.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.command == "run":
        if args.requests < 1:
            sys.exit("--requests must be >= 1")
        run_cell(args.workload, args.load, args.seed, args.requests, args.out, args.threads,
                 tuple(args.policies.split(",")))
    else:
        print(summary(args.out))


if __name__ == "__main__":
    main()
