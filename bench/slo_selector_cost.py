"""The SLO selector's Python cost per step: `SLOPolicy.choose` (mode and block for every
decoding request, deferral included) over N running requests, in CPU time (process time,
so other jobs on a shared machine do not count).

  python -m bench.slo_selector_cost [--requests 64] [--profile FILE] [--calls 200]
  python -m bench.slo_selector_cost --hash      # decisions, not times (identity checks)

Batches: `slack` (every request has a loose deadline: AR for all, the common case under
load), `tight` (a quarter of them need speculation to meet a TPOT below AR alone: the
meet-most search runs every step), `mixed` (half interactive at 1.5x AR, half batch).

Each batch runs as a sequence of steps, as on a server: every call the clock moves on by
the predicted step (times a random +-5 %, which the cost model learns), each request emits
its option's tokens per forward (drawn), learns its acceptance, and a finished request is
replaced by a new one (so about N / mean length requests leave and arrive per step). The
policy keeps decisions across calls (policies/decision_cache.py) or re-plans every call
(`full`, the cache off); `ar` is the same policy pinned to AR (no mode choice: what the
choice costs on top is kept - ar). All run the same sequence of batches. Reported: the
median and mean CPU time per call and the share of calls that re-planned in full.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

from policies.decision_cache import CacheConfig
from policies.option import AR1, Option
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.request_view import RequestView
from policies.slo import SLO

PROFILE = Path(__file__).parent / "profiles" / "roofline-h200-llama8b.json"


def new_request(kind: str, i: int, ar_s: float, now: float, rng: random.Random,
                fresh: bool) -> RequestView:
    if kind == "tight" and i % 4 == 0:
        slo = SLO(tpot_ms=0.7 * ar_s * 1e3)
    elif kind == "mixed" and i % 2 == 0:
        slo = SLO(tpot_ms=1.5 * ar_s * 1e3)
    else:
        slo = SLO(deadline_ms=60_000.0)
    return RequestView(f"r{i}", now - 0.05, slo, max_tokens=rng.randint(32, 96),
                       num_prompt=32, num_output=1 if fresh else rng.randint(1, 20),
                       num_pending=1, first_token_s=now - 0.03)


def batch(kind: str, n: int, ar_s: float, seed: int = 0) -> list[RequestView]:
    rng = random.Random(seed)
    return [new_request(kind, i, ar_s, 0.0, rng, False) for i in range(n)]


def run(policy: SLOPolicy, kind: str, n: int, calls: int, seed: int = 0,
        digest: hashlib._Hash | None = None) -> list[float]:
    """CPU seconds of each of `calls` choose() calls along one sequence of steps; each
    call's options and deferrals go into `digest` when given."""
    rng = random.Random(seed)
    ar_s = policy.cost.predict(1, 1)
    views, next_id, now, times = batch(kind, n, ar_s, seed), n, 0.0, []
    for _ in range(calls):
        t = time.process_time()
        options, deferred = policy.choose(views, now)
        times.append(time.process_time() - t)
        if digest is not None:
            digest.update(repr((sorted((k, str(o)) for k, o in options.items()),
                                sorted(deferred))).encode())
        running = [v for v in views if v.id not in deferred]
        tokens = sum(options[v.id].work_tokens for v in running)
        step = policy.cost.predict(tokens, len(running)) * rng.uniform(0.95, 1.05)
        policy.observe_step(tokens, len(running), step)
        now += step
        out = []
        for v in views:
            option: Option = options[v.id] if v.id not in deferred else (v.option or AR1)
            emitted = 0
            if v.id not in deferred:
                tpf = policy.acceptance.tokens_per_forward(option, v.id)
                emitted = max(1, min(option.block, round(rng.uniform(0.5, 1.5) * tpf)))
                policy.observe_request(v.id, option, 1, emitted)
            if v.num_output + emitted >= v.max_tokens:
                policy.finish(v.id)
                out.append(new_request(kind, next_id, ar_s, now, rng, True))
                next_id += 1
            else:
                out.append(replace(v, num_output=v.num_output + emitted, option=option))
        views = out
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slo_selector_cost")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--profile", type=Path, default=PROFILE)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--hash", action="store_true",
                   help="print a hash of every sequence's decisions (16 and 64 requests, "
                        "both bench profiles) instead of times")
    args = p.parse_args(argv)
    if args.hash:
        print_hashes(args.calls)
        return
    profile = Profile.load(args.profile)
    print(f"{args.requests} requests, {args.calls} steps, {args.profile.name}: CPU ms per "
          f"choose() (median / mean), share of calls re-planned in full")
    for kind in ("slack", "mixed", "tight"):
        cells = []
        for name, config in (("kept", PolicyConfig()),
                             ("full", PolicyConfig(cache=CacheConfig(enabled=False))),
                             ("ar", PolicyConfig(fixed=AR1))):
            policy = SLOPolicy(profile, config)
            times = run(policy, kind, args.requests, args.calls)
            d = policy.decisions
            share = d.num_full / max(1, d.num_selects) if config.cache.enabled else 1.0
            cells.append(f"{name} {statistics.median(times) * 1e3:6.3f} / "
                         f"{statistics.fmean(times) * 1e3:6.3f} ms" + (
                             f" (full {share:4.0%})" if config.fixed is None else ""))
        print(f"{kind:6s} " + "   ".join(cells))


def print_hashes(calls: int) -> None:
    """One hash per sequence of every choose()'s options and deferrals: a change that must
    not change decisions leaves all of them equal."""
    for path in (PROFILE, Path(__file__).parent / "slo_profile.json"):
        profile = Profile.load(path)
        for n in (16, 64):
            for kind in ("slack", "mixed", "tight"):
                for name, config in (("kept", PolicyConfig()),
                                     ("full", PolicyConfig(cache=CacheConfig(enabled=False)))):
                    digest = hashlib.sha256()
                    run(SLOPolicy(profile, config), kind, n, calls, digest=digest)
                    print(f"{path.name} {n} {kind} {name} {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
