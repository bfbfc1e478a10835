"""Every engine step's (tokens, requests, wall seconds) on the engine check's own requests,
for the simulator's step clock (bench/slo_replay.py run --steps points).

  /work/bin/quiet python -m bench.engine_steps --workload tight --load low --seeds 0,4 \
      --policies auto,spec_linear,spec_quadratic --out STEPS.json [--slowdown F]

The profile's cost fit (policies/cost_model.py) is what the simulator's steps last; on this
CPU the engine's steps ran 1.2-1.4x that fit at tight low (BENCHMARKS.md, #18 thirteenth
session), with per-token and per-request costs 1.6-1.9x the fit's. This records the steps
of one call (the model loaded once, the SLO scale probed once or fixed, as
bench/slo_engine_cells.py does) with each run's goodput and refusals.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.slo import _row
from bench.slo_engine_cells import (
    StepPoints,
    add_run_options,
    cell_rate,
    cell_specs,
    check_slowdown,
    engine_policy_config,
    parse_seeds,
)
from policies.policy import SLOPolicy
from policies.profile import Profile


def record(workload: str, load: str, seeds: list[int], policies: list[str],
           num_requests: int, profile_path: Path, slowdown: float | None) -> list[dict]:
    import torch

    from bench.slo_engine import EngineBench, kept_into

    torch.set_num_threads(1)
    profile = Profile.load(profile_path)
    bench = EngineBench()
    cost, probe = bench.call_scale(SLOPolicy(profile).cost, slowdown)  # also warms the model
    rows = []
    for seed in seeds:
        specs = cell_specs(workload, load, seed, num_requests, cost, len(bench.prompts))
        for name in policies:
            kept: list[StepPoints] = []
            load_avg, utc = os.getloadavg()[0], time.strftime("%H:%M:%S", time.gmtime())
            results = bench.run(specs, profile, engine_policy_config(name),
                                kept_into(kept, StepPoints))
            rows.append(_row("engine", workload, load, name, results,
                             cell_rate(workload, load, cost)) | {
                "seed": seed, "slowdown": round(cost.factor, 3), "probe": round(probe, 3),
                "utc": utc, "load_avg": round(load_avg, 2), "points": kept[-1].points})
            print(f"{workload}/{load}/seed {seed} {name}: goodput {rows[-1]['goodput']:.3f} "
                  f"refused {rows[-1]['num_refused']} steps {len(kept[-1].points)}", flush=True)
    return rows


def pooled_points(path: Path) -> list[tuple[int, int, float]]:
    """Every recorded step of the file, all runs together."""
    return [(int(t), int(r), float(s)) for row in json.loads(path.read_text())["runs"]
            for t, r, s in row["points"]]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.engine_steps",
                                description=__doc__.split("\n")[0])
    add_run_options(p, "auto,spec_linear,spec_quadratic", clock=False)  # it records wall steps
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    check_slowdown(args.slowdown)
    rows = record(args.workload, args.load, parse_seeds(args.seeds),
                  [x for x in args.policies.split(",") if x], args.requests, args.profile,
                  args.slowdown)
    args.out.write_text(json.dumps({"runs": rows}) + "\n")


if __name__ == "__main__":
    main()
