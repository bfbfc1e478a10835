"""`tandem bench slo`: SLO attainment and goodput of auto against each fixed mode.

Every policy runs the same workloads (policies/workloads.py: Poisson arrivals, the request
classes and length distributions are stated there) at each load level, in the simulator
(driven by the profile measured from the real engine, bench/slo_profile.json) and, at small
scale, on the real engine. The fixed-mode policies share auto's ordering, admission and
preemption: only the mode choice differs. Goodput = requests per second that completed and
met every bound of their SLO (`vllm bench serve --goodput`); attainment = the share of all
requests that did (refused ones included, as failures).

  tandem bench slo                  # sim (all workloads) + engine (mixed), table
  tandem bench slo --json           # {"runs": [{"where", "workload", "load", "policy", ...}]}
  tandem bench slo --calibrate      # re-measure the profile on this machine first
  tandem bench slo --where sim --plot bench/slo_attainment.png
  tandem bench slo --where sim --profile bench/profiles/roofline-h200-llama8b.json \
      --acceptance nld8b --workloads tight,mixed_tight   # modelled GPU, synthetic acceptance
  tandem bench slo --where sim --workload-spec my.json --workloads voice   # own workloads
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench.synthetic_acceptance import add_profile_arguments, load_profile
from engine.simulator import SimConfig, Simulator
from policies.decision_cache import CacheConfig
from policies.metrics import summarize
from policies.option import AR, DIFFUSION, LINEAR, QUADRATIC, Option, default_option
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.workload_spec import WorkloadSpecError, load_workloads
from policies.workloads import LOADS, WORKLOADS, Workload, capacity_rps, generate

PROFILE = Path(__file__).with_name("slo_profile.json")
PLOT = Path(__file__).with_name("slo_attainment.png")
LOSSLESS_FIXED = (AR, LINEAR, QUADRATIC)  # what auto must match (diffusion is lossy)
FCFS_FIXED = tuple(f"fcfs:{m}" for m in LOSSLESS_FIXED)
SIM_POLICIES = ("auto", *LOSSLESS_FIXED, DIFFUSION, *FCFS_FIXED)
ENGINE_POLICIES = ("auto", *LOSSLESS_FIXED, *FCFS_FIXED)


def policy_config(name: str) -> PolicyConfig:
    """"auto"; a mode ("ar", ...: that mode for every request, same SLO scheduling as auto);
    "fcfs:MODE" (that mode under first-come scheduling: no SLO ordering, admission,
    deferral or slack-based preemption; the engine's default FirstComePolicy)."""
    fcfs, _, mode = name.rpartition(":")
    if mode == "auto_full":  # auto re-planned in full every step (policies/decision_cache.py off)
        return PolicyConfig(cache=CacheConfig(enabled=False), slo_aware=not fcfs)
    fixed: Option | None = None if mode == "auto" else default_option(mode)
    return PolicyConfig(fixed=fixed, slo_aware=not fcfs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tandem bench slo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_profile_arguments(p, PROFILE)
    p.add_argument("--workload-spec", type=Path, default=None,
                   help="JSON file of extra workloads (policies/workload_spec.py)")
    p.add_argument("--calibrate", action="store_true", help="re-measure the profile first")
    p.add_argument("--where", default="sim,engine", help="sim, engine or both")
    p.add_argument("--workloads", default=None,
                   help=f"names, comma-separated (default: {','.join(WORKLOADS)} and every "
                        "workload of --workload-spec)")
    p.add_argument("--engine-workloads", default="mixed")
    p.add_argument("--loads", default=",".join(LOADS))
    p.add_argument("--policies", default=",".join(SIM_POLICIES))
    p.add_argument("--engine-policies", default=",".join(ENGINE_POLICIES))
    p.add_argument("--sim-requests", type=int, default=300)
    p.add_argument("--sim-seeds", type=int, default=3)
    p.add_argument("--drift", type=float, default=0.0,
                   help="sim: sigma of a slow AR(1) wander of step times (0: off)")
    p.add_argument("--drift-rho", type=float, default=0.995,
                   help="sim: the wander's step-to-step correlation")
    p.add_argument("--engine-requests", type=int, default=40)
    p.add_argument("--engine-repeats", type=int, default=2,
                   help="engine runs per load and policy (different arrivals), averaged")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the engine")
    p.add_argument("--plot", type=Path, default=None, help=f"write a PNG (e.g. {PLOT})")
    args = p.parse_args(argv)
    if args.drift < 0 or not 0 <= args.drift_rho < 1:
        sys.exit(f"tandem bench slo: --drift must be >= 0 and --drift-rho in [0, 1), got "
                 f"{args.drift} and {args.drift_rho}")
    return args


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def _row(where: str, workload: str, load: str, policy: str, results: list, rate: float
         ) -> dict:
    s = summarize(results)
    row = {"where": where, "workload": workload, "load": load, "policy": policy,
           "attainment": round(s.attainment, 4), "goodput": round(s.goodput, 4),
           "rate_rps": round(rate, 3), "num_requests": s.num_requests,
           "num_refused": s.num_refused}
    for kind in sorted({r.kind for r in results}):
        k = summarize(results, kind)
        row[f"attainment_{kind}"] = round(k.attainment, 4)
        row[f"refused_{kind}"] = k.num_refused
    return row


def workloads_of(args: argparse.Namespace) -> dict[str, Workload]:
    """The workloads the run asked for, by name; exits with a message naming a bad one."""
    known: dict[str, Workload] = dict(WORKLOADS)
    extra: dict[str, Workload] = {}
    if args.workload_spec is not None:
        try:
            extra = load_workloads(args.workload_spec)
        except WorkloadSpecError as e:
            sys.exit(f"tandem bench slo: --workload-spec {args.workload_spec}: {e.field}: "
                     f"{e.message}")
        known.update(extra)
    names = _split(args.workloads) if args.workloads else [*WORKLOADS, *extra]
    for flag, text in (("--workloads", ",".join(names)),
                       ("--engine-workloads", args.engine_workloads)):
        for name in _split(text):
            if name not in known:
                sys.exit(f"tandem bench slo: {flag}: unknown workload {name!r}; known: "
                         f"{', '.join(known)}")
    for load in _split(args.loads):
        if load not in LOADS:
            sys.exit(f"tandem bench slo: --loads: unknown load {load!r}; known: "
                     f"{', '.join(LOADS)}")
    return {n: known[n] for n in dict.fromkeys(names + _split(args.engine_workloads))}


def sim_runs(profile: Profile, args: argparse.Namespace,
             workloads: dict[str, Workload]) -> list[dict]:
    runs = []
    cost = SLOPolicy(profile).cost
    for workload in _split(args.workloads) if args.workloads else list(workloads):
        mix = workloads[workload]
        for load in _split(args.loads):
            rate = LOADS[load] * capacity_rps(mix, cost)
            for name in _split(args.policies):
                per_seed = []
                for seed in range(args.sim_seeds):
                    specs = generate(mix, rate, args.sim_requests, cost,
                                     profile.num_prompts(), seed)
                    policy = SLOPolicy(profile, policy_config(name))
                    sim = Simulator(profile, policy, SimConfig(
                        seed=seed, drift=args.drift, drift_rho=args.drift_rho))
                    per_seed.append(_row("sim", workload, load, name, sim.run(specs), rate))
                runs.append(_mean(per_seed))
    return runs


def engine_runs(profile: Profile, args: argparse.Namespace,
                workloads: dict[str, Workload]) -> list[dict]:
    import torch

    from bench.slo_engine import EngineBench, ScaledCost

    torch.set_num_threads(args.threads)
    bench, runs = EngineBench(), []
    base = SLOPolicy(profile).cost
    for workload in _split(args.engine_workloads):
        for load in _split(args.loads):
            rows: dict[str, list[dict]] = {name: [] for name in _split(args.engine_policies)}
            for repeat in range(args.engine_repeats):  # policies interleaved per repeat
                slowdown = bench.slowdown(base)
                cost = ScaledCost(base, slowdown)
                rate = LOADS[load] * capacity_rps(workloads[workload], cost)
                specs = generate(workloads[workload], rate, args.engine_requests, cost,
                                 len(bench.prompts), seed=100 + repeat)
                for name in rows:
                    results = bench.run(specs, profile, policy_config(name))
                    row = _row("engine", workload, load, name, results, rate)
                    rows[name].append(row | {"slowdown": round(slowdown, 3)})
                    print(f"  engine {workload}/{load}/{name}#{repeat} (machine x"
                          f"{slowdown:.2f}): attainment {row['attainment']:.2f}",
                          file=sys.stderr, flush=True)
            runs += [_mean(r) for r in rows.values()]
    return runs


def _mean(rows: list[dict]) -> dict:
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, float) and key != "rate_rps":
            out[key] = round(statistics.fmean(r[key] for r in rows), 4)
    out["num_requests"] = sum(r["num_requests"] for r in rows)
    out["num_refused"] = sum(r["num_refused"] for r in rows)
    return out


def main(argv: list[str] | None = None) -> None:
    from bench.slo_report import checks, table

    args = parse_args(argv)
    if args.calibrate:
        from bench.calibrate import calibrate

        print("calibrating on the real engine ...", file=sys.stderr, flush=True)
        calibrate(threads=args.threads).save(args.profile)
    workloads = workloads_of(args)
    profile = load_profile(args.profile, args.acceptance)
    where = _split(args.where)
    runs = (sim_runs(profile, args, workloads) if "sim" in where else [])
    runs += (engine_runs(profile, args, workloads) if "engine" in where else [])
    if args.plot:
        from bench.slo_plot import plot

        plot(runs, args.plot)
    if args.json:
        print(json.dumps({"runs": runs, "checks": checks(runs, LOSSLESS_FIXED, FCFS_FIXED),
                          "profile": profile.meta}))
    else:
        print(table(runs, LOSSLESS_FIXED, FCFS_FIXED))


if __name__ == "__main__":
    main()
