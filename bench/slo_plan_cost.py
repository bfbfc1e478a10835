"""The SLO policy's CPU cost per engine step, in the simulator (engine/simulator.py: the real
engine and scheduler, a trace-driven executor, simulated time): every step's
`SLOPolicy.plan` (learning from the last step, ordering, the mode choice with deferral,
preemption order, thresholds, the pace gate) and the mode choice alone (`choose`), in CPU
time (process time), bucketed by the number of running requests at that step.

  python -m bench.slo_plan_cost [--workloads tight,mixed] [--loads overload] [--requests 300]
      [--profile FILE [--acceptance nld8b]] [--seeds 1] [--table]

The runs are `bench.slo --where sim`'s for `auto` (same arrivals, seeds and request counts).
`--table` prints one line per cell: how its steps spread over running counts, and the cost
at 56-64 running (#12's target is per step at 64 running requests).

This is #12's "selector cost per step" as the engine pays it: kept decisions, steps where
nothing moved, requests mid-iteration (pinned) and arrivals all count, as they come in a
served workload. bench/slo_selector_cost.py measures the choice alone on synthetic batches
where every request is at an iteration boundary every step (a harder case).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.synthetic_acceptance import add_profile_arguments, load_profile
from engine.simulator import SimConfig, Simulator
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.workloads import LOADS, WORKLOADS, capacity_rps, generate

PROFILE = Path(__file__).parent / "profiles" / "roofline-h200-llama8b.json"
BUCKETS = ((0, 16), (17, 32), (33, 48), (49, 55), (56, 64))  # running requests at the step
FULL = BUCKETS[-1]  # "at 64 running requests"


class TimedPlans:
    """Wraps one SLOPolicy's plan() and choose(): (running requests, plan s, choose s) per
    step, CPU time."""

    def __init__(self, policy: SLOPolicy) -> None:
        self.rows: list[tuple[int, float, float]] = []
        self._choose_s = 0.0
        plan, choose = policy.plan, policy.choose

        def timed_choose(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.process_time()
            try:
                return choose(*args, **kwargs)
            finally:
                self._choose_s += time.process_time() - start

        def timed_plan(view, now):  # noqa: ANN001, ANN202
            self._choose_s = 0.0
            start = time.process_time()
            out = plan(view, now)
            self.rows.append((len(view.running), time.process_time() - start, self._choose_s))
            return out

        policy.plan: Callable = timed_plan  # type: ignore[method-assign]
        policy.choose: Callable = timed_choose  # type: ignore[method-assign]


def measure(profile: Profile, workload: str, load: str, num_requests: int, seed: int,
            config: PolicyConfig | None = None) -> list[tuple[int, float, float]]:
    """Every step of `auto` on one cell; `load` a name of LOADS or a multiple of capacity
    (past "overload": where batches reach 64 running)."""
    policy = SLOPolicy(profile, config or PolicyConfig())
    rate = LOADS[load] * capacity_rps(workload, policy.cost) if load in LOADS else (
        float(load) * capacity_rps(workload, policy.cost))
    specs = generate(workload, rate, num_requests, policy.cost, profile.num_prompts(), seed)
    timed = TimedPlans(policy)
    Simulator(profile, policy, SimConfig(seed=seed)).run(specs)
    return timed.rows


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def summary(rows: list[tuple[int, float, float]]) -> list[str]:
    """Per bucket of running requests: its steps, and plan / choose in ms (median / p90)."""
    lines = []
    for lo, hi in BUCKETS:
        cell = [(p, c) for n, p, c in rows if lo <= n <= hi]
        if not cell:
            continue
        plan = [p * 1e3 for p, _ in cell]
        choose = [c * 1e3 for _, c in cell]
        lines.append(f"  {lo:2d}-{hi:2d} running  {len(cell):5d} steps   plan "
                     f"{statistics.median(plan):6.3f} / {p90(plan):6.3f} ms   "
                     f"choose {statistics.median(choose):6.3f} / {p90(choose):6.3f} ms")
    return lines


def table_row(rows: list[tuple[int, float, float]]) -> str:
    """One cell: % of steps per bucket of BUCKETS, the most running, and at FULL running the
    steps and choose / plan in ms (median / p90)."""
    shares = " ".join(f"{100 * sum(lo <= n <= hi for n, _, _ in rows) / len(rows):5.1f}"
                      for lo, hi in BUCKETS)
    full = [(p * 1e3, c * 1e3) for n, p, c in rows if FULL[0] <= n <= FULL[1]]
    text = f"{shares}  max {max(n for n, _, _ in rows):2d}  {len(full):5d}"
    if full:
        choose, plan = [c for _, c in full], [p for p, _ in full]
        text += (f"  {statistics.median(choose):6.3f} / {p90(choose):6.3f}"
                 f"  {statistics.median(plan):6.3f} / {p90(plan):6.3f}")
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slo_plan_cost")
    add_profile_arguments(p, PROFILE)
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--loads", default=",".join(LOADS))
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1, pooled per cell")
    p.add_argument("--table", action="store_true", help="one line per cell")
    args = p.parse_args(argv)
    profile = load_profile(args.profile, args.acceptance)
    print(f"{profile_name(args)}: CPU ms per engine step, by running requests")
    if args.table:
        print(f"{'cell':24s} % of steps at " + " ".join(f"{lo}-{hi}" for lo, hi in BUCKETS)
              + f"  max  steps at {FULL[0]}-{FULL[1]}: n, choose, plan (median / p90)")
    for workload in args.workloads.split(","):
        for load in args.loads.split(","):
            rows = [r for seed in range(args.seeds)
                    for r in measure(profile, workload, load, args.requests, seed)]
            if args.table:
                print(f"{workload + ' ' + load:24s} {table_row(rows)}", flush=True)
            else:
                print(f"{workload} {load} ({len(rows)} steps)")
                print("\n".join(summary(rows)), flush=True)


def profile_name(args: argparse.Namespace) -> str:
    return Path(args.profile).name + (f" --acceptance {args.acceptance}"
                                      if args.acceptance != "profile" else "")


if __name__ == "__main__":
    main()
