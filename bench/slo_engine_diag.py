"""Why policies differ on one engine cell (#12): per run, what failed (refused, first token
late, pace missed), how many decoders a step carried, the share of decoding request-steps in
each mode, and the time per step of the policy's plan (CPU time, bench/step_overhead.py's
TimedPolicy) and of the executor (wall time).

  /work/bin/quiet python -m bench.slo_engine_diag --workload interactive --load high \
      --seeds 0,1 --policies auto,ar,ar,auto [--requests 200]

The same requests as bench/slo_engine_cells.py (seed s: arrivals drawn with 100 + s); a
policy named twice runs twice (the same seed twice shows the run-to-run noise). One SLO
scale for the whole call: probed once, or fixed with `--slowdown F`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter

from bench.slo_engine_cells import (
    add_run_options,
    call_cost,
    cell_specs,
    check_slowdown,
    engine_policy_config,
    parse_seeds,
    run_timing,
)
from bench.step_overhead import TimedPolicy
from engine.executor import Executor
from engine.plan import StepOutput, StepPlan
from policies.metrics import RequestResult, summarize
from policies.modes import ChunkKind
from policies.policy import SLOPolicy
from policies.profile import Profile


class RecordingExecutor(Executor):
    """The real executor, timed, with the modes of each step's decoding chunks kept."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.steps: list[tuple[float, list[str]]] = []

    def step(self, plan: StepPlan) -> StepOutput:
        t0 = time.perf_counter()
        out = self.inner.step(plan)
        modes = [w.mode for w in plan.works if w.kind is not ChunkKind.PREFILL]
        self.steps.append((time.perf_counter() - t0, modes))
        return out


def failures(results: list[RequestResult]) -> Counter:
    out: Counter = Counter()
    for r in results:
        if r.refused is not None:
            out["refused"] += 1
        elif not r.is_good:
            late = (r.slo.ttft_ms is not None and r.first_token_s is not None
                    and (r.first_token_s - r.arrival_s) * 1e3 > r.slo.ttft_ms)
            out["ttft" if late else "pace"] += 1
    return out


def refusals(results: list[RequestResult]) -> Counter:
    """Refused requests by class and the admission rule that refused them: "alone" (not
    even on an idle engine), "ttft" (the predicted first token under load is late), "tpot"
    (the predicted pace beside the requests that cannot wait is too slow; "tpot idle" when
    none of those was running, so only the prefill interference added to its pace alone
    refused it), else "other"."""
    out: Counter = Counter()
    for r in results:
        if r.refused is None:
            continue
        rule = ("alone" if "even alone" in r.refused
                else "ttft" if "time to first token" in r.refused
                else "tpot idle" if "beside 0 running" in r.refused
                else "tpot" if "time per output token" in r.refused else "other")
        out[f"{r.kind} {rule}"] += 1
    return out


def describe(name: str, results: list[RequestResult], steps: list, policy: TimedPolicy,
             num_preemptions: int = 0) -> str:
    s = summarize(results)
    modes = Counter(m for _, ms in steps for m in ms)
    total = sum(modes.values()) or 1
    mix = " ".join(f"{m} {n / total:.0%}" for m, n in modes.most_common())
    head = (f"{name:<14} good {s.num_good:>3} goodput {s.goodput:6.2f}  fail "
            f"{dict(failures(results))}  refused by {dict(refusals(results))}  deferred "
            f"{sum(policy.num_deferred)} preempted {num_preemptions}  steps {len(steps)}")
    if not steps:  # every request refused
        return head
    return (f"{head}  decoders/step {statistics.fmean(len(ms) for _, ms in steps):.1f}  "
            f"modes [{mix}]  plan {1e3 * statistics.fmean(policy.plan_s):.2f} ms  executor "
            f"{1e3 * statistics.fmean(t for t, _ in steps):.2f} ms")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slo_engine_diag",
                                description=__doc__.split("\n")[0])
    add_run_options(p, "auto,ar")
    args = p.parse_args(argv)
    check_slowdown(args.slowdown, args.clock)
    import torch

    from bench.slo_engine import EngineBench, kept_into

    torch.set_num_threads(1)
    profile = Profile.load(args.profile)
    bench = EngineBench()
    recorder = bench.executor = RecordingExecutor(bench.executor)
    engines: list = []  # the last run's engine, for its scheduler's preemption count
    make_engine = bench.engine
    bench.engine = lambda *a, **k: engines.append(make_engine(*a, **k)) or engines[-1]
    cost, _ = call_cost(bench, SLOPolicy(profile).cost, args.clock, args.slowdown)
    for seed in parse_seeds(args.seeds):
        specs = cell_specs(args.workload, args.load, seed, args.requests, cost,
                           len(bench.prompts))
        for name in (x for x in args.policies.split(",") if x):
            recorder.steps.clear()
            timed: list[TimedPolicy] = []
            load = os.getloadavg()[0]
            results = bench.run(specs, profile, engine_policy_config(name),
                                kept_into(timed, TimedPolicy),
                                run_timing(profile, args.clock, seed))
            print(f"seed {seed} load {load:4.1f} x{cost.factor:.2f} "
                  + describe(name, results, recorder.steps, timed[-1],
                             engines[-1].scheduler.num_preemptions), flush=True)


if __name__ == "__main__":
    main()
