"""The SLO selector's Python cost per step: `SLOPolicy.choose` (mode and block for every
decoding request, deferral included) over N running requests, in CPU time (process time,
so other jobs on a shared machine do not count), median of many calls.

  python -m bench.slo_selector_cost [--requests 64] [--profile FILE] [--calls 200]

Batches: `slack` (every request has a loose deadline: AR for all, the common case under
load), `tight` (a quarter of them need speculation to meet a TPOT below AR alone: the
meet-most search runs every step), `mixed` (half interactive at 1.5x AR, half batch).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.request_view import RequestView
from policies.slo import SLO

PROFILE = Path(__file__).parent / "profiles" / "roofline-h200-llama8b.json"


def batch(kind: str, n: int, ar_s: float, seed: int = 0) -> list[RequestView]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if kind == "tight" and i % 4 == 0:
            slo = SLO(tpot_ms=0.7 * ar_s * 1e3)
        elif kind == "mixed" and i % 2 == 0:
            slo = SLO(tpot_ms=1.5 * ar_s * 1e3)
        else:
            slo = SLO(deadline_ms=60_000.0)
        out.append(RequestView(f"r{i}", -0.05, slo, max_tokens=rng.randint(32, 96),
                               num_prompt=32, num_output=rng.randint(1, 20), num_pending=1,
                               first_token_s=-0.03))
    return out


def cost_ms(policy: SLOPolicy, views: list[RequestView], calls: int) -> float:
    times = []
    for _ in range(calls):
        t = time.process_time()
        policy.choose(views, now=0.0)
        times.append(time.process_time() - t)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slo_selector_cost")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--profile", type=Path, default=PROFILE)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args(argv)
    profile = Profile.load(args.profile)
    for kind in ("slack", "mixed", "tight"):
        policy = SLOPolicy(profile)
        views = batch(kind, args.requests, policy.cost.predict(1, 1))
        print(f"{kind:6s} {args.requests} requests: {cost_ms(policy, views, args.calls):.3f} ms "
              f"per step (median CPU time of {args.calls} calls, {args.profile.name})")


if __name__ == "__main__":
    main()
