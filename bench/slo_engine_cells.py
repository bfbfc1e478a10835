"""#12's CPU-engine target, cell by cell: `auto` against the fixed lossless modes on the real
engine in wall-clock time (bench/slo_engine.py), every policy on the same requests.

  python -m bench.slo_engine_cells run --workload mixed --load high --seeds 0,1,2 \
      [--policies auto,ar] [--requests 200] [--repeats 1] [--out bench/slo_engine_grid.json]
  python -m bench.slo_engine_cells summary [--out FILE] [--per-seed]

One call loads the model once and runs every (seed, policy, repeat) of one (workload, load).
So that slow drift of a shared machine (another job starting, a warmer cache) does not land
on one policy, the order alternates: seed 0 runs the policies as given, seed 1 reversed, and
with `--repeats 2` each seed runs them there and back (A B B A). A policy's value for a seed is
the mean of its repeats; the same seed run twice is the noise floor the summary prints.

Per cell the summary shows each policy's goodput (requests that met every SLO bound per
second) as the mean over seeds with the spread (min-max); auto over the best fixed mode as
the ratio of the means; the per-seed ratios (min-max: each seed's auto over that seed's best
fixed mode, both on the same requests); and the same-seed noise (the largest relative
difference between two runs of one policy on one seed); `--per-seed` lists each seed's
goodputs and refusals instead, with the call's SLO scale. A policy run on fewer seeds than
auto is marked with its seed count. Load average before each run, the machine's slowdown
against the profile (SLOs and arrival rates are scaled by it) and the code's commit are
recorded per run. One SLO scale per call: `--slowdown F` fixes it (e.g. the factor an earlier
call printed, so that calls are comparable); without it the machine is probed once, before
the first seed, and every seed and policy of the call shares that scale.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench.slo import _row, policy_config
from bench.slo_engine import EngineBench, ScaledCost, kept_into
from engine.policy import SchedulingPolicy, WatchedPolicy
from policies.cost_model import CostModel
from policies.decision import BatchDecision, SchedulerView
from policies.option import AR1
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.step_clock import StepClock
from policies.workloads import LOADS, WORKLOADS, RequestSpec, capacity_rps, generate
from policies.workloads import CostModel as CostModelLike

OUT = Path(__file__).with_name("slo_engine_grid.json")
# The engine tools' default cost profile (run here, bench.slo_engine_diag, bench.engine_steps):
# the newest CPU profile of bench/profiles/. Not the simulator's bench/slo_profile.json
# (bench.slo), measured on a slower day: on today's machine its "tight" bound is loose
# (BENCHMARKS.md, #18 fourteenth session, the default-profile trap).
ENGINE_PROFILE = Path(__file__).with_name("profiles") / "cpu-tiny-2026-12-04.json"
POLICIES = ("auto", "ar", "spec_linear", "spec_quadratic")
CLOCKS = ("wall", "profile")  # what times the engine's steps (run_timing)
FIXED = POLICIES[1:]
AUTO_AR = "auto_ar"  # auto's machinery with AR as its only option (the A/B of #12)
WITH_GATE = "_gate"  # suffix: the policy with the pace gate on (policies/pace_gate.py)


def engine_policy_config(name: str) -> PolicyConfig:
    """bench.slo's policy names, plus auto_ar: auto restricted to an AR-only pool, so that
    auto's own machinery (deferral, admission, rescues at AR) is compared with fixed AR
    without any speculation; NAME_gate: NAME with the pace gate on (off by default)."""
    if name.endswith(WITH_GATE):
        base = engine_policy_config(name.removesuffix(WITH_GATE))
        return replace(base, pace_gate=replace(base.pace_gate, enabled=True))
    if name == AUTO_AR:
        base = policy_config("auto")
        return replace(base, selector=replace(base.selector, pool=(AR1,)))
    return policy_config(name)


def run_order(policies: tuple[str, ...], seed: int, repeats: int) -> list[tuple[str, int]]:
    """(policy, repeat) in run order: reversed on odd seeds, there and back per repeat."""
    forward = list(policies) if seed % 2 == 0 else list(reversed(policies))
    order = []
    for r in range(repeats):
        order += [(p, r) for p in (forward if r % 2 == 0 else reversed(forward))]
    return order


def cell_specs(workload: str, load: str, seed: int, num_requests: int, cost: CostModelLike,
               num_prompts: int) -> list[RequestSpec]:
    """The requests of one engine cell and seed: arrivals drawn with 100 + seed at the load's
    share of AR's capacity, SLOs from `cost` (the profile's fit times the call's scale);
    prompt_index counts held-out prompts (bench/slo_engine.py prompt_ids)."""
    return generate(WORKLOADS[workload], cell_rate(workload, load, cost), num_requests, cost,
                    num_prompts, seed=100 + seed)


def cell_rate(workload: str, load: str, cost: CostModelLike) -> float:
    return LOADS[load] * capacity_rps(WORKLOADS[workload], cost)


class StepPoints(WatchedPolicy):
    """The engine-side policy, with every finished step's (tokens, requests, seconds) kept
    (the scheduler's record of the step before: wall time of schedule and executor)."""

    def __init__(self, inner: SchedulingPolicy) -> None:
        super().__init__(inner)
        self.points: list[tuple[int, int, float]] = []

    def watch(self, view: SchedulerView, decision: BatchDecision, cpu_s: float) -> None:
        step = view.last_step
        if step is not None and step.num_tokens > 0:
            self.points.append((step.num_tokens, step.num_requests, step.seconds))


class StepRatios(StepPoints):
    """Each step's wall time over what the profile predicts for its batch: how much slower
    than the profile the machine ran during the run itself (the probe times lone AR steps of
    short prompts before it, and read 1.05 while a mixed run's steps ran 1.3-1.7x;
    BENCHMARKS.md, "ninth session")."""

    def __init__(self, inner: SchedulingPolicy, cost: CostModel) -> None:
        super().__init__(inner)
        self.cost = cost

    @property
    def ratios(self) -> list[float]:
        return [s / self.cost.predict(t, r) for t, r, s in self.points]


def step_ratio(ratios: list[float]) -> float | None:
    """The run's median step over the profile; None where no step ran (every request
    refused: AR on the tight workload, whose TPOT bound AR misses alone)."""
    return round(statistics.median(ratios), 3) if ratios else None


def _code_id() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=Path(__file__).parent, check=False)
    return out.stdout.strip() or "unknown"


def run_cell(workload: str, load: str, seeds: list[int], num_requests: int, out: Path,
             threads: int, policies: tuple[str, ...] = POLICIES, repeats: int = 1,
             profile_path: Path = ENGINE_PROFILE, slowdown: float | None = None,
             clock: str = "wall") -> None:
    """clock "profile": every step lasts what the profile's step clock draws (the
    simulator's times, seeded by the seed; bench/slo_engine.py ProfileTimed), SLOs at scale 1
    and no probe; "wall": wall time, SLOs scaled by the probe or `slowdown`."""
    import torch

    torch.set_num_threads(threads)
    profile = Profile.load(profile_path)
    bench, code = EngineBench(), _code_id()
    base = SLOPolicy(profile).cost
    cost, probe = call_cost(bench, base, clock, slowdown)  # probe: recorded
    rows, rate = [], cell_rate(workload, load, cost)
    for seed in seeds:
        specs = cell_specs(workload, load, seed, num_requests, cost, len(bench.prompts))
        for name, repeat in run_order(policies, seed, repeats):
            load_avg, t0 = os.getloadavg()[0], time.monotonic()
            steps: list[StepRatios] = []
            timing = run_timing(profile, clock, seed)
            results = bench.run(specs, profile, engine_policy_config(name),
                                kept_into(steps, lambda p: StepRatios(p, base)), timing)
            row = _row("engine", workload, load, name, results, rate) | {
                "seed": seed, "repeat": repeat, "slowdown": round(cost.factor, 3),
                "probe": None if probe is None else round(probe, 3), "clock": clock,
                "step_ratio": step_ratio(steps[-1].ratios),
                "load_avg": round(load_avg, 2), "wall_s": round(time.monotonic() - t0, 1),
                "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "code": code,
                "profile": profile_path.name}
            rows.append(row)
            print(f"{workload}/{load}/seed {seed} {name}#{repeat}: attainment "
                  f"{row['attainment']:.2f} goodput {row['goodput']:.3f} refused "
                  f"{row['num_refused']} ({row['wall_s']} s, load {load_avg:.2f}, steps "
                  f"x{row['step_ratio'] or 0:.2f} the profile)", flush=True)
    merge_runs(out, rows, lambda r: (r["workload"], r["load"], r["seed"], r["policy"],
                                     r.get("clock", "wall")))


def merge_runs(out: Path, rows: list[dict], key: Callable[[dict], tuple]) -> None:
    """Add rows to out's "runs", replacing the earlier rows with the key of a new one."""
    done = {key(r) for r in rows}
    old = json.loads(out.read_text())["runs"] if out.exists() else []
    out.write_text(json.dumps({"runs": [r for r in old if key(r) not in done] + rows},
                              indent=1) + "\n")


def cell_stats(runs: list[dict]) -> dict:
    """One cell's numbers from its rows: per policy {seed: mean goodput over repeats}, the
    seeds every policy of auto's comparison has, the ratios, and the same-seed noise."""
    by: dict[str, dict[int, list[float]]] = {}
    for r in runs:
        by.setdefault(r["policy"], {}).setdefault(r["seed"], []).append(r["goodput"])
    means = {p: {s: statistics.fmean(v) for s, v in seeds.items()} for p, seeds in by.items()}
    noise = max((abs(v[0] - v[1]) / statistics.fmean(v[:2]) for seeds in by.values()
                 for v in seeds.values() if len(v) > 1 and statistics.fmean(v[:2]) > 0),
                default=None)
    fixed = [p for p in FIXED if p in means]
    auto_seeds = sorted(means.get("auto", {}))
    per_seed = []
    for s in auto_seeds:
        if not any(s in means[p] for p in fixed):
            continue  # no fixed mode ran this seed: nothing to compare (not "inf")
        best = max(means[p][s] for p in fixed if s in means[p])
        per_seed.append(means["auto"][s] / best if best > 0 else float("inf"))
    mean_of = {p: statistics.fmean(v.values()) for p, v in means.items()}
    best_fixed = max((mean_of[p] for p in fixed), default=0.0)
    ratio = (mean_of["auto"] / best_fixed if "auto" in mean_of and best_fixed > 0
             else None)
    return {"means": means, "mean": mean_of, "auto_seeds": auto_seeds, "ratio": ratio,
            "per_seed": per_seed, "noise": noise}


def summary(out: Path) -> str:
    runs = json.loads(out.read_text())["runs"]
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        cells.setdefault((r["workload"], r["load"]), []).append(r)
    order = list(LOADS)
    lines = [f"{'workload':<12}{'load':<12}{'seeds':>5}  " + "".join(
        f"{p:>26}" for p in POLICIES)
        + f"{'auto/best':>10}{'per seed':>13}{'noise':>7}  load avg  steps/profile"]
    for (workload, load), rows in sorted(cells.items(),
                                         key=lambda c: (c[0][0], order.index(c[0][1]))):
        st = cell_stats(rows)
        n = len(st["auto_seeds"])
        cols = []
        for p in POLICIES:
            values = list(st["means"].get(p, {}).values())
            if not values:
                cols.append("-")
                continue
            tag = f" [{len(values)}s]" if len(values) < n else ""
            cols.append(f"{st['mean'][p]:6.2f} ({min(values):.2f}-{max(values):.2f}){tag}")
        ratio = f"{st['ratio']:.2f}x" if st["ratio"] is not None else "-"
        seeds = (f"{min(st['per_seed']):.2f}-{max(st['per_seed']):.2f}x"
                 if st["per_seed"] else "-")
        noise = f"{st['noise']:.0%}" if st["noise"] is not None else "-"
        loads = [r["load_avg"] for r in rows]
        steps = [r["step_ratio"] for r in rows if r.get("step_ratio")]  # (older rows: none)
        step_range = f"  {min(steps):.2f}-{max(steps):.2f}" if steps else ""
        lines.append(f"{workload:<12}{load:<12}{n:>5}  " + "".join(f"{c:>26}" for c in cols)
                     + f"{ratio:>10}{seeds:>13}{noise:>7}  {min(loads):.1f}-{max(loads):.1f}"
                     + step_range)
    return "\n".join(lines)


def seed_table(out: Path) -> str:
    """The per-seed spread behind summary's ratios: per cell and seed, each policy's goodput
    with its refusals in brackets (mean over repeats; refusals of the first), the best fixed
    mode, auto over it, and the call's SLO scale and probe."""
    runs = json.loads(out.read_text())["runs"]
    by: dict[tuple[str, str, int], list[dict]] = {}
    for r in runs:
        by.setdefault((r["workload"], r["load"], r["seed"]), []).append(r)
    order = list(LOADS)
    lines = [f"{'workload':<12}{'load':<12}{'seed':>4}  " + "".join(f"{p:>18}" for p in POLICIES)
             + f"{'best fixed':>16}{'auto/best':>10}  scale (probe)"]
    for (workload, load, seed), rows in sorted(by.items(), key=lambda c: (
            c[0][0], order.index(c[0][1]), c[0][2])):
        goodput = {p: statistics.fmean(r["goodput"] for r in rows if r["policy"] == p)
                   for p in {r["policy"] for r in rows}}
        refused = {r["policy"]: r["num_refused"] for r in rows if r["repeat"] == 0}
        cols = [f"{goodput[p]:.3f} [{refused[p]}]" if p in goodput else "-" for p in POLICIES]
        fixed = [p for p in FIXED if p in goodput]
        best = max(fixed, key=goodput.__getitem__, default=None)
        ratio = ("-" if best is None or "auto" not in goodput
                 else "inf" if goodput[best] == 0 else f"{goodput['auto'] / goodput[best]:.2f}x")
        best = best if best is not None and goodput[best] > 0 else None  # none met any
        scales = sorted({(r["slowdown"], r.get("probe")) for r in rows})
        scale = ", ".join(f"x{s:.3f} (x{p:.3f})" if p is not None else f"x{s:.3f}"
                          for s, p in scales)
        lines.append(f"{workload:<12}{load:<12}{seed:>4}  " + "".join(f"{c:>18}" for c in cols)
                     + f"{best or '-':>16}{ratio:>10}  {scale}")
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s]
    except ValueError:
        sys.exit(f"--seeds: comma-separated integers, got {text!r}")
    if not seeds or min(seeds) < 0:
        sys.exit(f"--seeds: at least one seed, none negative, got {text!r}")
    return seeds


def add_run_options(p: argparse.ArgumentParser, policies: str,
                    policies_help: str | None = None, clock: bool = True) -> None:
    """The options every per-run engine tool shares (run here, bench.engine_steps,
    bench.slo_engine_diag); clock: with --clock (not for a tool that records wall steps)."""
    p.add_argument("--workload", choices=list(WORKLOADS), required=True)
    p.add_argument("--load", choices=list(LOADS), required=True)
    p.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    p.add_argument("--policies", default=policies, help=policies_help)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--profile", type=Path, default=ENGINE_PROFILE,
                   help=f"cost profile (default: bench/profiles/{ENGINE_PROFILE.name}, the "
                        "newest CPU profile; the simulator's bench/slo_profile.json, measured "
                        "on a slower day, makes the tight bound loose on this machine)")
    p.add_argument("--slowdown", type=float, default=None,
                   help="the SLO and arrival-rate scale of every run (default: probe once)")
    if clock:
        p.add_argument("--clock", choices=CLOCKS, default="wall",
                       help="profile: the real engine and model with each step timed by "
                            "the profile's step clock (deterministic; SLO scale 1, no probe)")


def call_cost(bench: EngineBench, base: CostModel, clock: str, slowdown: float | None
              ) -> tuple[ScaledCost, float | None]:
    """The call's SLO and arrival-rate scale, and the probe behind it (None: not probed).
    On the profile's clock (ProfileTimed) steps last what the profile says: scale 1."""
    if clock == "profile":
        print("profile clock: every step timed by the profile's step clock, SLO scale x1",
              flush=True)
        return ScaledCost(base, 1.0), None
    return bench.call_scale(base, slowdown)


def run_timing(profile: Profile, clock: str, seed: int) -> StepClock | None:
    """A run's step times on the profile's clock (seeded as the simulator's), or None: wall."""
    return StepClock(profile.cost, seed=seed) if clock == "profile" else None


def check_slowdown(value: float | None, clock: str = "wall") -> None:
    # Below 1 only when asked: the probe never reads below 1 (bench/slo_engine.py), but a
    # machine faster than its profile makes "tight" loose there (AR alone met it: #18).
    if value is not None and not 0.5 <= value <= 10.0:
        sys.exit(f"--slowdown: a factor in [0.5, 10], got {value}")
    if value is not None and clock == "profile":
        sys.exit("--slowdown: the profile's clock runs at the profile's speed (SLO scale 1); "
                 "drop --slowdown or use --clock wall")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slo_engine_cells",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    add_run_options(r, ",".join(POLICIES), "comma-separated; auto_full = auto with the "
                    "decision cache off, auto_ar = auto with AR as its only option")
    r.add_argument("--repeats", type=int, default=1,
                   help="runs of each policy per seed (2: A B B A, shows the noise)")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--out", type=Path, default=OUT)
    s = sub.add_parser("summary")
    s.add_argument("--out", type=Path, default=OUT)
    s.add_argument("--per-seed", action="store_true",
                   help="one line per cell and seed (goodput [refused] per policy) instead")
    args = p.parse_args(argv)
    if args.command == "run":
        if args.requests < 1 or args.repeats < 1:
            sys.exit("--requests and --repeats must be >= 1")
        check_slowdown(args.slowdown, args.clock)
        policies = tuple(x for x in args.policies.split(",") if x)
        for name in policies:
            try:
                engine_policy_config(name)
            except (KeyError, ValueError):
                sys.exit(f"--policies: unknown policy {name!r}")
        run_cell(args.workload, args.load, parse_seeds(args.seeds), args.requests, args.out,
                 args.threads, policies, args.repeats, args.profile, args.slowdown,
                 args.clock)
    else:
        print(seed_table(args.out) if args.per_seed else summary(args.out))


if __name__ == "__main__":
    main()
