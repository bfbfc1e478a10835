"""The CPU attention on a decode batch: a git revision's reference against this tree's,
padded to the longest context ("one group") and grouped by context at several group costs.

    python -m bench.attention_groups --baseline-rev d9feade   # serve-like spread, tiny shapes
    python -m bench.attention_groups --costs 0 512 1024 2048 4096

One forward's attention = the groups built once + every layer's attention call, on the same
random batch for every variant, variants interleaved round by round;
ratio = baseline ms / this row's ms (medians over rounds).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable

import torch

from kernels import attention_groups
from kernels.attention_ref import attention_reference
from kernels.random_batch import causal, paged_plan


def reference_at(rev: str) -> types.ModuleType:
    """kernels/attention_ref.py as it was at a git revision (self-contained before the
    eleventh session), loaded as a module of its own."""
    source = subprocess.run(["git", "show", f"{rev}:kernels/attention_ref.py"], check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"attention_ref_{rev}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{rev}:kernels/attention_ref.py", "exec"), module.__dict__)
    return module


def forward_ms(contexts: list[int], variant: Callable, args: argparse.Namespace,
               caches: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, int]:
    """Wall ms of one forward's attention (plan groups + num_layers calls), and the number
    of groups the variant ran."""
    n = len(contexts)
    q = torch.randn(n, args.heads, args.head_dim)
    k = torch.randn(n, args.kv_heads, args.head_dim)
    v = torch.randn(n, args.kv_heads, args.head_dim)
    plan = paged_plan([causal(1)] * n, contexts, args.page, caches[0].shape[0])  # decodes
    t0 = time.perf_counter()
    groups = variant(q, k, v, caches, plan, args)
    return (time.perf_counter() - t0) * 1e3, groups


def this_tree(group_cost: float | None) -> Callable:
    def run(q, k, v, caches, plan, args) -> int:
        if group_cost is None:
            plan.groups = [(None, plan)]
        else:
            plan.groups = attention_groups.split_groups(plan, group_cost=int(group_cost))
        for _ in range(args.layers):
            attention_reference(q, k, v, caches[0], caches[1], plan, args.head_dim ** -0.5)
        return len(plan.groups)
    return run


def at_rev(module: types.ModuleType) -> Callable:
    def run(q, k, v, caches, plan, args) -> int:
        old = module.AttentionPlan(*(getattr(plan, f) for f in (
            "cu_seqlens", "causal_limit", "block_lo", "block_hi", "context_lens",
            "block_tables", "max_chunk_len", "max_context_len")))
        for _ in range(args.layers):
            module.attention_reference(q, k, v, caches[0], caches[1], old,
                                       args.head_dim ** -0.5)
        return len(getattr(old, "groups", None) or [old])  # one padded batch before groups
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--spread", type=int, nargs=2, default=[20, 150],
                   help="contexts drawn uniformly from this range (staggered arrivals)")
    p.add_argument("--costs", type=float, nargs="+",
                   default=[512, attention_groups.GROUP_COST_KEY_ROWS, 2048])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--page", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--baseline-rev", default="",
                   help="also time kernels/attention_ref.py at this git revision")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lo, hi = args.spread
    num_blocks = args.batch * (-(-hi // args.page)) + 1
    shape = (num_blocks, args.page, args.kv_heads, args.head_dim)
    caches = (torch.randn(shape), torch.randn(shape))
    batches = {
        "staggered": lambda: torch.randint(lo, hi + 1, (args.batch,)).tolist(),
        "lockstep": lambda: [hi] * args.batch,
    }
    variants = {"one group": this_tree(None)}
    variants |= {f"cost {c:g}": this_tree(c) for c in args.costs}
    base_name = "one group"
    if args.baseline_rev:
        base_name = f"at {args.baseline_rev}"
        variants = {base_name: at_rev(reference_at(args.baseline_rev))} | variants
    print(f"batch {args.batch} decodes, contexts {lo}-{hi}, {args.layers} layers, "
          f"H {args.heads} KVH {args.kv_heads} D {args.head_dim}, {args.rounds} rounds, "
          f"ratio = {base_name} / row")
    print(f"{'batch':10s} {'variant':>14s} {'groups':>6s} {'ms':>8s} {'ratio':>6s}")
    for name, draw in batches.items():
        times: dict[str, list[float]] = {v: [] for v in variants}
        groups: dict[str, list[int]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            ctx = draw()
            for v, run in variants.items():
                ms, n = forward_ms(ctx, run, args, caches)
                times[v].append(ms)
                groups[v].append(n)
        base = statistics.median(times[base_name])
        for v in variants:
            m = statistics.median(times[v])
            print(f"{name:10s} {v:>14s} {statistics.mean(groups[v]):6.2f} {m:8.3f} "
                  f"{base / m:6.3f}")


if __name__ == "__main__":
    main()
