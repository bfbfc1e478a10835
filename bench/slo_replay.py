"""The simulator on the engine check's own requests (#18: why they disagree on tight).

  python -m bench.slo_replay trace --workload tight --seeds 0,1,2,3,4 --requests 200 \
      --profile bench/profiles/cpu-tiny-2026-12-04.json --out TRACES.json
  python -m bench.slo_replay run --traces TRACES.json --loads low,medium,medium_high \
      --acceptance own --steps fit [--engine bench/slo_engine_tight_2026-12-04.json] --out OUT
  python -m bench.slo_replay compare --engine bench/slo_engine_tight_2026-12-04.json --out OUT

`trace` records each request's acceptance in every speculative option on the engine's model
(bench/replay_traces.py). `run` replays, per load and seed, the very requests of
bench/slo_engine_cells.py (same prompts, lengths, arrivals and SLOs) in the simulator under
each policy, with one difference to the engine switched at a time:
  --acceptance own      each request accepts as it did on the engine (its own trace);
  --acceptance profile  as the simulator does today: the base profile's 16 traced prompts
                        (the request's held-out prompt index modulo 16);
  --steps fit           step times from the profile's cost fit (the simulator today);
  --steps engine        the fit times the engine run's own median step over it (the cell
                        rows' step_ratio, per load, seed and policy; 1 where it ran none);
  --steps points --step-points FILE   step times from a fit of the engine's own recorded
                        steps (bench/engine_steps.py), the same fit the profile's points get;
  --align               acceptance by output position (engine/trace_executor.py): a request
                        that switches to a mode accepts as the trace did at that position.
The policy always starts from the base profile, as on the engine. Rows keep the variant and
auto's mode mix (share of decoding request-steps per mode); `compare` sets them beside the
engine's rows of the same seeds (bench/slo_replay_compare.py).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from bench.engine_steps import pooled_points
from bench.replay_traces import replay_specs, trace_cells
from bench.slo import _row
from bench.slo_engine import ScaledCost
from bench.slo_engine_cells import (
    POLICIES,
    cell_rate,
    cell_specs,
    engine_policy_config,
    merge_runs,
    parse_seeds,
)
from engine.simulator import SimConfig, Simulator
from policies.cost_model import Point
from policies.metrics import RequestResult
from policies.modes import ChunkKind
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.workloads import LOADS, WORKLOADS, RequestSpec

ACCEPTANCE = ("own", "profile")
STEPS = ("fit", "engine", "points")


def replay(base: Profile, traces: Profile, specs: list[RequestSpec], policy: str, seed: int,
           step_factor: float = 1.0, align: bool = False, step_points: list[Point] | None = None
           ) -> tuple[list[RequestResult], dict[str, float]]:
    """One simulated run: the policy from `base`, acceptance from `traces` (bound by each
    spec's prompt_index), step times from base's cost points times step_factor (or from
    step_points where given). Returns the results and the share of decoding request-steps
    (all but prefill chunks) per mode."""
    points = step_points or [(t, r, s * step_factor) for t, r, s in base.cost]
    executor_profile = Profile(points, traces.traces)
    sim = Simulator(executor_profile, SLOPolicy(base, engine_policy_config(policy)),
                    SimConfig(seed=seed, record_plans=True, align_traces=align))
    results = sim.run(specs)
    modes = Counter(mode for plan in sim.plans for _, kind, mode, _ in plan
                    if kind != ChunkKind.PREFILL)
    total = sum(modes.values()) or 1
    return results, {str(m): round(n / total, 4) for m, n in modes.most_common()}


def step_factors(engine_out: Path | None) -> dict[tuple[str, str, int, str], float]:
    """(workload, load, seed, policy) -> the engine run's median step over the profile."""
    if engine_out is None:
        return {}
    return {(r["workload"], r["load"], r["seed"], r["policy"]): r["step_ratio"]
            for r in json.loads(engine_out.read_text())["runs"] if r.get("step_ratio")}


def run_cells(traces_path: Path, loads: list[str], policies: list[str], acceptance: str,
              steps: str, engine_out: Path | None, out: Path, seeds: list[int] | None = None,
              align: bool = False, slo_scale: float | None = None,
              step_points: Path | None = None) -> list[dict]:
    traced = Profile.load(traces_path)
    meta = traced.meta
    base = Profile.load(meta["base_profile"])
    scale = meta["slo_scale"] if slo_scale is None else slo_scale  # SLOs and arrival rate
    cost = ScaledCost(SLOPolicy(base).cost, scale)
    factors = step_factors(engine_out)
    if steps == "engine" and not factors:
        raise ValueError("--steps engine needs --engine (the cell rows' step_ratio)")
    if (steps == "points") != (step_points is not None):
        raise ValueError("--steps points goes with --step-points FILE, and only with it")
    points = pooled_points(step_points) if step_points is not None else None
    workload, rows = meta["workload"], []
    for load in loads:
        for seed in seeds if seeds is not None else meta["seeds"]:
            drawn = cell_specs(workload, load, seed, meta["num_requests"], cost,
                               meta["num_prompts"])
            own = replay_specs(traced, drawn, seed)  # also checks they are the traced ones
            specs, source = (own, traced) if acceptance == "own" else (drawn, base)
            for name in policies:
                factor = factors.get((workload, load, seed, name), 1.0) if steps == "engine" \
                    else 1.0
                results, modes = replay(base, source, specs, name, seed, factor, align,
                                        points)
                row = _row("sim", workload, load, name, results,
                           cell_rate(workload, load, cost)) | {
                    "seed": seed, "acceptance": acceptance, "steps": steps,
                    "step_factor": factor, "align": align, "slo_scale": scale, "modes": modes}
                rows.append(row)
                print(f"{workload}/{load}/seed {seed} {name} [{acceptance}, {steps}"
                      f"{', aligned' if align else ''}]: "
                      f"goodput {row['goodput']:.3f} refused {row['num_refused']}", flush=True)
    merge_runs(out, rows, _variant_key)
    return rows


def _variant_key(r: dict) -> tuple:
    """Rows of the same variant, cell, seed and policy replace each other."""
    return (r["acceptance"], r["steps"], r.get("align", False), r.get("slo_scale", 1.0),
            r["workload"], r["load"], r["seed"], r["policy"])


def main(argv: list[str] | None = None) -> None:
    from bench.slo_replay_compare import compare

    p = argparse.ArgumentParser(prog="python -m bench.slo_replay",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trace")
    t.add_argument("--workload", choices=list(WORKLOADS), required=True)
    t.add_argument("--seeds", default="0")
    t.add_argument("--requests", type=int, default=200)
    t.add_argument("--profile", required=True)
    t.add_argument("--slowdown", type=float, default=1.0, help="the engine call's SLO scale")
    t.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--traces", type=Path, required=True)
    r.add_argument("--loads", default="low,medium,medium_high")
    r.add_argument("--seeds", default=None, help="default: every traced seed")
    r.add_argument("--policies", default=",".join(POLICIES))
    r.add_argument("--acceptance", choices=ACCEPTANCE, default="own")
    r.add_argument("--steps", choices=STEPS, default="fit")
    r.add_argument("--engine", type=Path, default=None, help="engine cell rows (step_ratio)")
    r.add_argument("--align", action="store_true", help="acceptance by output position")
    r.add_argument("--step-points", type=Path, default=None,
                   help="bench.engine_steps output, for --steps points")
    r.add_argument("--slo-scale", type=float, default=None,
                   help="the engine call's SLO scale (default: the one traced with)")
    r.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("--engine", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.command == "trace":
        trace_cells(args.workload, parse_seeds(args.seeds), args.requests, args.profile,
                    args.slowdown).save(args.out)
    elif args.command == "run":
        loads = [x for x in args.loads.split(",") if x]
        if any(x not in LOADS for x in loads):
            p.error(f"--loads: one of {', '.join(LOADS)}")
        seeds = parse_seeds(args.seeds) if args.seeds else None
        run_cells(args.traces, loads, [x for x in args.policies.split(",") if x],
                  args.acceptance, args.steps, args.engine, args.out, seeds, args.align,
                  args.slo_scale, args.step_points)
    else:
        print(compare(args.engine, args.out))


if __name__ == "__main__":
    main()
