"""The engine grid's cells in the simulator on a machine slower than its profile (#12).

  python -m bench.slo_slow_sim --workload interactive --load medium_high --truth 1.9 \
      [--seeds 0,1,2] [--policies auto,ar] [--requests 150] [--slowdown 1.376] [--profile P] \
      [--charge-plan]

As bench/slo_engine_cells.py builds a cell (the same requests per seed: arrivals drawn with
100 + seed, SLOs and arrival rate at `--slowdown` x the profile), but run by the simulator
whose ground truth is the profile's step times times `--truth`, while the policy starts
from the profile itself. That is the engine's situation on a machine that probes slower
than the slowdown the SLOs were scaled by; unlike the engine, it is deterministic per seed,
so a rule can be compared with the same requests and the same noise. Modelled numbers.
The engine's truth is its steps' wall time over the profile's prediction
(bench/slo_engine_cells.py's `step_ratio`), not the probe. `--charge-plan` adds what the
engine has and the simulator does not: the policy's own CPU time inside each step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.slo_engine import ScaledCost
from bench.slo_engine_cells import engine_policy_config, parse_seeds
from bench.slo_engine_diag import failures, refusals
from engine.simulator import SimConfig, Simulator
from policies.metrics import summarize
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.workloads import LOADS, WORKLOADS, capacity_rps, generate

CPU_PROFILE = Path(__file__).with_name("profiles") / "cpu-tiny-2026-12-03.json"


def slower(profile: Profile, factor: float) -> Profile:
    """The same profile with every step `factor` times longer (the simulator's truth)."""
    return Profile([(t, r, s * factor) for t, r, s in profile.cost], profile.traces,
                   profile.meta)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slo_slow_sim",
                                description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=list(WORKLOADS), required=True)
    p.add_argument("--load", choices=list(LOADS), required=True)
    p.add_argument("--truth", type=float, required=True,
                   help="the simulated machine's steps over the profile's")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--policies", default="auto,ar")
    p.add_argument("--requests", type=int, default=150)
    p.add_argument("--slowdown", type=float, default=1.376, help="the SLO and rate scale")
    p.add_argument("--profile", type=Path, default=CPU_PROFILE)
    p.add_argument("--charge-plan", action="store_true",
                   help="the policy's plan CPU time advances the clock, as on the engine "
                        "(not deterministic)")
    args = p.parse_args(argv)
    profile = Profile.load(args.profile)
    truth = slower(profile, args.truth)
    cost = ScaledCost(SLOPolicy(profile).cost, args.slowdown)
    rate = LOADS[args.load] * capacity_rps(WORKLOADS[args.workload], cost)
    totals: dict[str, int] = {}
    for seed in parse_seeds(args.seeds):
        specs = generate(WORKLOADS[args.workload], rate, args.requests, cost, profile.num_prompts(),
                         seed=100 + seed)
        for name in (x for x in args.policies.split(",") if x):
            policy = SLOPolicy(profile, engine_policy_config(name))
            config = SimConfig(seed=seed, charge_plan=args.charge_plan)
            results = Simulator(truth, policy, config).run(specs)
            s = summarize(results)
            totals[name] = totals.get(name, 0) + s.num_good
            print(f"seed {seed} {name:<8} met {s.num_good:>3} goodput {s.goodput:6.2f}  fail "
                  f"{dict(failures(results))}  refused by {dict(refusals(results))}",
                  flush=True)
    print("met over the seeds: " + "  ".join(f"{k} {v}" for k, v in totals.items()))


if __name__ == "__main__":
    main()
