"""The SLO policy's CPU cost per engine step, in the simulator (engine/simulator.py: the real
engine and scheduler, a trace-driven executor, simulated time): every step's
`SLOPolicy.plan` (learning from the last step, ordering, the mode choice with deferral,
preemption order, thresholds, the pace gate) and the mode choice alone (`choose`), in CPU
time (process time), bucketed by the number of running requests at that step.

  python -m bench.slo_plan_cost [--workloads tight,mixed] [--loads overload] [--requests 600]
      [--profile FILE [--acceptance nld8b]] [--seed 0]

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
from policies.workloads import LOADS, capacity_rps, generate

PROFILE = Path(__file__).parent / "profiles" / "roofline-h200-llama8b.json"
BUCKETS = ((0, 16), (17, 32), (33, 48), (49, 64))  # running requests at the step


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
    policy = SLOPolicy(profile, config or PolicyConfig())
    rate = LOADS[load] * capacity_rps(workload, policy.cost)
    specs = generate(workload, rate, num_requests, policy.cost, profile.num_prompts(), seed)
    timed = TimedPlans(policy)
    Simulator(profile, policy, SimConfig(seed=seed)).run(specs)
    return timed.rows


def summary(rows: list[tuple[int, float, float]]) -> list[str]:
    lines = []
    for lo, hi in BUCKETS:
        cell = [(p, c) for n, p, c in rows if lo <= n <= hi]
        if not cell:
            continue
        plan = [p * 1e3 for p, _ in cell]
        choose = [c * 1e3 for _, c in cell]
        lines.append(f"  {lo:2d}-{hi:2d} running  {len(cell):5d} steps   plan "
                     f"{statistics.median(plan):6.3f} / {statistics.fmean(plan):6.3f} ms   "
                     f"choose {statistics.median(choose):6.3f} / "
                     f"{statistics.fmean(choose):6.3f} ms")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slo_plan_cost")
    add_profile_arguments(p, PROFILE)
    p.add_argument("--workloads", default="tight,mixed")
    p.add_argument("--loads", default="overload")
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    profile = load_profile(args.profile, args.acceptance)
    print(f"{profile_name(args)}: CPU ms per engine step (median / mean), by running requests")
    for workload in args.workloads.split(","):
        for load in args.loads.split(","):
            rows = measure(profile, workload, load, args.requests, args.seed)
            print(f"{workload} {load} ({len(rows)} steps)")
            print("\n".join(summary(rows)))


def profile_name(args: argparse.Namespace) -> str:
    return Path(args.profile).name + (f" --acceptance {args.acceptance}"
                                      if args.acceptance != "profile" else "")


if __name__ == "__main__":
    main()
