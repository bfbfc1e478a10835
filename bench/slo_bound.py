"""An upper bound on any schedule's goodput for a `tandem bench slo` cell (simulator).

The oracle: each request gets the device to itself (no other request, no queue) and the best
of the lossless options auto chooses among (bench/slo.py's pool: AR and every traced
linear/quadratic block within the selector's bounds), with step times at the cost model's
mean (no noise). A request this oracle cannot serve within its SLO is served in time by no
schedule that runs it on one option: sharing the device only lengthens its steps (the cost
model grows with batch tokens and requests). Goodput counts good requests over the run's
span (first arrival to last completion), which is at least first to last arrival, so

  goodput <= (requests the oracle meets) / (last arrival - first arrival)

and auto / best fixed <= that bound / the best fixed mode's measured goodput.

The span has a second floor, for the same reason: no request finishes sooner than it would
alone on an idle device with its fastest option, so the run lasts at least until the
latest of (arrival + that time alone) over the requests. `goodput_bound_drain` divides
the met requests by that span instead: the bound with the drain after the last arrival
counted. Where the
oracle meets every request (the `mixed` workload on the H200 profile) the bound needs no
argument about schedules at all: no run has more good requests than requests, nor a span
shorter than the arrivals'. Caveat: a
schedule that switches a request between options mid-output replays a different mix of
iterations; the bound assumes one option per request (what each fixed mode runs, and what
auto runs between switches).

  python -m bench.slo_bound --profile bench/profiles/roofline-h200-llama8b.json \
      --acceptance nld8b --workload mixed_tight --loads medium,high --seeds 3 \
      [--results bench/slo_results_tight.json]   # JSON: one object per cell
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from bench.slo import PROFILE
from bench.synthetic_acceptance import add_profile_arguments, load_profile
from engine.simulator import SimConfig, Simulator
from policies.option import AR1, Option
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.selector import ModeSelector
from policies.workloads import LOADS, WORKLOADS, RequestSpec, capacity_rps, generate

Key = tuple[int, int, int, float | None, float | None, float | None]
Alone = tuple[bool, float]  # (met alone by some option, seconds to finish alone at the fastest)


class Oracle:
    """Whether a request meets its SLO alone with its best option, and how soon it finishes
    alone with its fastest (memoised: the answers depend only on its prompt trace, lengths
    and bounds). Every option runs for every request: the fastest needs them all."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        policy = SLOPolicy(profile)
        pool = ModeSelector(policy.cost, policy.acceptance).pool
        speculative = [o for o in pool if o.is_lossless and o != AR1 and not o.draft_tokens]
        self.options: list[Option] = [AR1, *speculative]
        self._memo: dict[Key, Alone] = {}

    def is_met(self, spec: RequestSpec) -> bool:
        return self._best(spec)[0]

    def fastest_s(self, spec: RequestSpec) -> float:
        """Seconds from arrival to its last token alone, with its fastest option."""
        return self._best(spec)[1]

    def _best(self, spec: RequestSpec) -> Alone:
        slo = spec.slo
        key = (spec.prompt_index, spec.num_prompt, spec.max_tokens, slo.ttft_ms, slo.tpot_ms,
               slo.deadline_ms)
        if key not in self._memo:
            runs = [self._alone(spec, o) for o in self.options]
            self._memo[key] = (any(met for met, _ in runs), min(s for _, s in runs))
        return self._memo[key]

    def _alone(self, spec: RequestSpec, option: Option) -> Alone:
        policy = SLOPolicy(self.profile, PolicyConfig(fixed=option, slo_aware=False))
        sim = Simulator(self.profile, policy, SimConfig(noise=0.0))
        (result,) = sim.run([replace(spec, arrival_s=0.0)])
        assert result.finish_s is not None  # alone on an idle device: never refused
        return result.is_good, result.finish_s


def bound(oracle: Oracle, workload: str, load: str, seed: int, num_requests: int) -> dict:
    mix = WORKLOADS[workload]
    cost = SLOPolicy(oracle.profile).cost
    rate = LOADS[load] * capacity_rps(mix, cost)
    specs = generate(mix, rate, num_requests, cost,
                     oracle.profile.num_prompts(), seed)
    met = sum(oracle.is_met(s) for s in specs)
    first = min(s.arrival_s for s in specs)
    span = max(s.arrival_s for s in specs) - first
    span_drain = max(s.arrival_s + oracle.fastest_s(s) for s in specs) - first
    return {"met_alone": met, "num_requests": len(specs), "span_s": span,
            "goodput_bound": met / span, "span_drain_s": span_drain,
            "goodput_bound_drain": met / span_drain}


def profile_label(path: Path, acceptance: str) -> str:
    """How bench/slo_results_tight.json names a run's profile (its `profile` field)."""
    return path.name + (f" + {acceptance}" if acceptance != "profile" else "")


def best_fixed(results: Path | None, label: str, workload: str, load: str
               ) -> tuple[str, float] | None:
    """(policy, goodput) of the best lossless fixed mode in a `tandem bench slo --json`
    file, if it has the cell; runs with a `profile` field count only under `label` (a file
    that merges several profiles), those without it are the file's one profile."""
    if results is None:
        return None
    runs = json.loads(results.read_text())["runs"]
    rows = [r for r in runs if r["workload"] == workload and r["load"] == load
            and r.get("profile", label) == label
            and r["policy"] in ("ar", "spec_linear", "spec_quadratic")]
    best = max(rows, key=lambda r: r["goodput"], default=None)
    return None if best is None else (best["policy"], best["goodput"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slo_bound", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_profile_arguments(p, PROFILE)
    p.add_argument("--workload", default="mixed_tight", choices=tuple(WORKLOADS))
    p.add_argument("--loads", default=",".join(LOADS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--results", type=Path, default=None,
                   help="tandem bench slo --json output of the same profile and acceptance")
    args = p.parse_args(argv)
    profile = load_profile(args.profile, args.acceptance)
    oracle = Oracle(profile)
    for load in args.loads.split(","):
        cells = [bound(oracle, args.workload, load, seed, args.requests)
                 for seed in range(args.seeds)]
        out = {"workload": args.workload, "load": load, "acceptance": args.acceptance,
               "met_alone": statistics.fmean(c["met_alone"] for c in cells),
               "num_requests": cells[0]["num_requests"],
               "goodput_bound": round(statistics.fmean(c["goodput_bound"] for c in cells), 3),
               "goodput_bound_drain": round(
                   statistics.fmean(c["goodput_bound_drain"] for c in cells), 3)}
        best = best_fixed(args.results, profile_label(args.profile, args.acceptance),
                          args.workload, load)
        if best is not None:
            out |= {"best_fixed": best[0], "best_fixed_goodput": best[1],
                    "ratio_bound": round(out["goodput_bound"] / best[1], 3),
                    "ratio_bound_drain": round(out["goodput_bound_drain"] / best[1], 3)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
