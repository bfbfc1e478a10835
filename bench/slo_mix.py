"""What decided a `tandem bench slo` cell: per request class, the options a policy chose for
its decoding requests (share of decode decisions), the share of decisions that sat the step
out (deferred), refusals, and how the requests that missed their SLO ended.

  python -m bench.slo_mix --profile bench/profiles/roofline-h200-llama8b.json \
      --acceptance nld8b --workload tight --load low --policies auto,spec_quadratic [--seeds 3]

One simulator run per (policy, seed), as `tandem bench slo --where sim` runs it; prints one
JSON object per policy (shares averaged over the seeds). With `--per-seed`, one per (policy,
seed) instead, with the run's goodput and the acceptance estimates it ended with
(policies/acceptance.py `snapshot`): auto runs of one cell split into those that settled
on linear and those that settled on quadratic speculation, and the mean hides that
(BENCHMARKS.md, "Eleventh session (sched-tight)").
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from bench.slo import PROFILE, policy_config
from bench.synthetic_acceptance import add_profile_arguments, load_profile
from engine.simulator import SimConfig, Simulator
from policies.decision import BatchDecision, SchedulerView
from policies.metrics import RequestResult, summarize
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.workloads import LOADS, WORKLOADS, capacity_rps, generate


class _Recorder:
    """Counts, per class, the option of every decoding request in each decision."""

    def __init__(self, policy: SLOPolicy) -> None:
        self.options: dict[str, Counter[str]] = {}
        self._plan = policy.plan
        policy.plan = self._recorded  # type: ignore[method-assign]

    def _recorded(self, view: SchedulerView, now: float) -> BatchDecision:
        decision = self._plan(view, now)
        for v in view.running:
            if v.is_prefilling:
                continue
            kind = v.id.rsplit("-", 1)[0]
            key = "deferred" if v.id in decision.deferred else decision.options[v.id].key
            self.options.setdefault(kind, Counter())[key] += 1
        return decision


def _ending(r: RequestResult) -> str:
    if r.refused is not None:
        return f"refused {r.status}"
    if r.is_good:
        return "met"
    if r.finish_s is None or r.first_token_s is None:
        return "unfinished"
    missed = r.slo.violations(r.first_token_s - r.arrival_s, r.finish_s - r.arrival_s,
                              r.num_output)
    return "missed " + "+".join(m.split()[0] for m in missed)


def run(profile: Profile, workload: str, load: str, policy: str, seed: int,
        num_requests: int) -> tuple[dict[str, Counter[str]], list[RequestResult], SLOPolicy]:
    """One simulator run: (option counts per class, results, the policy as it ended)."""
    mix = WORKLOADS[workload]
    slo_policy = SLOPolicy(profile, policy_config(policy))
    rate = LOADS[load] * capacity_rps(mix, slo_policy.cost)
    specs = generate(mix, rate, num_requests, slo_policy.cost,
                     profile.num_prompts(), seed)
    recorder = _Recorder(slo_policy)
    results = Simulator(profile, slo_policy, SimConfig(seed=seed)).run(specs)
    return recorder.options, results, slo_policy


def cell(profile: Profile, workload: str, load: str, policy: str, seed: int,
         num_requests: int) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """(option counts per class, endings per class) of one simulator run."""
    options, results, _ = run(profile, workload, load, policy, seed, num_requests)
    endings: dict[str, Counter[str]] = {}
    for r in results:
        endings.setdefault(r.kind, Counter())[_ending(r)] += 1
    return options, endings


def seed_row(profile: Profile, workload: str, load: str, policy: str, seed: int,
             num_requests: int) -> dict:
    """One run's goodput, its decisions' options (all classes) and its final acceptance."""
    options, results, slo_policy = run(profile, workload, load, policy, seed, num_requests)
    s = summarize(results)
    total = Counter[str]()
    for c in options.values():
        total.update(c)
    n = sum(total.values()) or 1
    return {"policy": policy, "workload": workload, "load": load, "seed": seed,
            "goodput": round(s.goodput, 4), "attainment": round(s.attainment, 4),
            "num_refused": s.num_refused,
            "decisions": {k: round(c / n, 3) for k, c in total.most_common()},
            "acceptance": slo_policy.acceptance.snapshot()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slo_mix", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_profile_arguments(p, PROFILE)
    p.add_argument("--workload", default="tight", choices=tuple(WORKLOADS))
    p.add_argument("--load", default="low", choices=tuple(LOADS))
    p.add_argument("--policies", default="auto")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--per-seed", action="store_true",
                   help="one object per seed: goodput, options, final acceptance estimates")
    args = p.parse_args(argv)
    profile = load_profile(args.profile, args.acceptance)
    for policy in args.policies.split(","):
        if args.per_seed:
            for seed in range(args.seeds):
                print(json.dumps(seed_row(profile, args.workload, args.load, policy, seed,
                                          args.requests)), flush=True)
            continue
        options: dict[str, Counter[str]] = {}
        endings: dict[str, Counter[str]] = {}
        for seed in range(args.seeds):
            o, e = cell(profile, args.workload, args.load, policy, seed, args.requests)
            for kind, c in o.items():
                options.setdefault(kind, Counter()).update(c)
            for kind, c in e.items():
                endings.setdefault(kind, Counter()).update(c)
        out = {"policy": policy, "workload": args.workload, "load": args.load, "classes": {}}
        for kind in sorted(endings):
            total = sum(options.get(kind, Counter()).values()) or 1
            out["classes"][kind] = {
                "endings": dict(endings[kind]),
                "decisions": {k: round(n / total, 3)
                              for k, n in options.get(kind, Counter()).most_common()}}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
