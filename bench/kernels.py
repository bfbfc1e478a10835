"""Per kernel: max error against its reference and time against the best torch baseline.

    python -m bench.kernels                  # CUDA: fp16, full shapes, triton.testing.do_bench
    python -m bench.kernels --dry-run        # CPU: the interpreter on tiny shapes, same paths

speedup = best torch time / Triton time (>= 0.9 is the target for attention on decode and
denoise shapes). err = max |triton - reference| / max |reference| (<= 1e-3 in fp16), with
the reference run in fp32 on the same half inputs. Sampling counts a different token as a
failure (err = inf), acceptance likewise. Every callable of a case (the launcher as the
dispatch calls it, which gives the verdict, its forced-split variants, the baselines) is
compiled first, then timed side by side in the same rounds (bench/kernel_timing.py), so a
variant's figure and the verdict's can be compared. launch_us: host time of one Triton call.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from bench.kernel_cases import DRY, FULL, Case, all_cases
from bench.kernel_timing import Rounds, Sample, launch_us, time_side_by_side

ERR_LIMIT = 1e-3
SPEED_TARGET = 0.9
CHECK_SPEED = True  # off in the dry run: interpreted kernels are not timed for speed


@dataclass
class Row:
    kernel: str
    shape: str
    layout: str
    err: float
    triton_us: float
    torch_us: float
    baseline: str
    speedup: float
    note: str = ""
    launch_us: float = math.nan  # host time of one triton call (kernel_timing.launch_us)

    @property
    def verdict(self) -> str:
        bad = []
        if not self.err <= ERR_LIMIT:
            bad.append("ERR")
        if (CHECK_SPEED and self.kernel == "attention"
                and self.layout.split()[0] in ("decode", "denoise")
                and not self.speedup >= SPEED_TARGET):
            bad.append("SLOW")
        return " ".join(bad) or "ok"


@dataclass(frozen=True)
class CaseTiming:
    """How every callable of a case is timed (bench/kernel_timing.py)."""

    sample: Sample
    sync: Callable[[], None]
    rounds: Rounds
    launch_calls: int  # calls averaged for launch_us


def case_timing(cuda: bool) -> CaseTiming:
    """CUDA: do_bench's median per sample (L2 flushed before each call), 5 rounds after 0.5 s
    of warm-up. CPU: one call's wall time, one round after the first calls (the dry run
    checks code paths, not speed)."""
    if cuda:
        from triton.testing import do_bench

        return CaseTiming(lambda fn: 1e3 * do_bench(fn, warmup=1, rep=10, return_mode="median"),
                          torch.cuda.synchronize, Rounds(warmup_s=0.5, rounds=5), 20)

    def wall(fn: Callable) -> float:
        start = time.perf_counter()
        fn()
        return 1e6 * (time.perf_counter() - start)

    return CaseTiming(wall, lambda: None, Rounds(warmup_s=0.0, rounds=1), 1)


def flex_attention() -> Callable | None:
    """Compiled FlexAttention where this torch has it (a baseline for attention)."""
    try:
        from torch.nn.attention.flex_attention import flex_attention as flex

        return torch.compile(flex, dynamic=False)
    except Exception:  # noqa: BLE001 - an optional baseline
        return None


def run_case(case: Case, timing: CaseTiming, deadline: float) -> Row:
    """Error against the reference, then every callable timed side by side. The optional
    ones (Triton's split variants: tuning data; compiled flex: a compile per shape) join
    only while the budget lasts."""
    note = []
    out, ref = case.triton(), case.reference()  # the first call compiles the launcher's kernel
    err = case.compare(out, ref) if case.compare else float("nan")
    # (kind, name): the launcher as dispatched, forced-split variants, torch baselines
    wanted = [(("baseline", n), fn) for n, fn in case.baselines.items() if n != "flex"]
    wanted += [(("variant", k), fn) for k, fn in case.variants.items()]
    if "flex" in case.baselines:
        wanted.append((("baseline", "flex"), case.baselines["flex"]))
    fns: dict[tuple[str, str], Callable] = {("triton", ""): case.triton}
    skipped = []
    for (kind, name), fn in wanted:
        if (kind == "variant" or name == "flex") and time.monotonic() > deadline:
            skipped.append(name)
            continue
        try:
            fn()  # the first call (a compile) outside every timing
        except Exception as exc:  # noqa: BLE001 - a baseline that fails is reported, not fatal
            if kind == "variant":
                raise
            note.append(f"{name}: {exc.__class__.__name__}")
            continue
        fns[kind, name] = fn
    if skipped:
        note.append(f"skipped (time): {' '.join(skipped)}")
    timing.sync()
    times = time_side_by_side(fns, timing.sample, timing.rounds, timing.sync)
    launch = launch_us(case.triton, timing.sync, timing.launch_calls)
    variants = {name: t for (kind, name), t in times.items() if kind == "variant"}
    if variants:
        note.insert(0, "triton " + " ".join(f"{k}:{v:.1f}us" for k, v in variants.items()))
    baselines = {name: t for (kind, name), t in times.items() if kind == "baseline"}
    best_name = min(baselines, key=baselines.__getitem__) if baselines else "-"
    best = baselines.get(best_name, math.inf)
    t_triton = times["triton", ""]
    return Row(case.kernel, case.shape, case.layout, err, t_triton, best, best_name,
               best / t_triton if t_triton > 0 else math.nan, "; ".join(note), launch)


def table(rows: list[Row]) -> str:
    head = (f"{'kernel':10s} {'shape':5s} {'layout':28s} {'max_rel_err':>11s} "
            f"{'triton_us':>10s} {'launch_us':>9s} {'torch_us':>9s} {'baseline':12s} "
            f"{'speedup':>7s}  verdict")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.kernel:10s} {r.shape:5s} {r.layout:28s} {r.err:11.2e} "
                     f"{r.triton_us:10.1f} {r.launch_us:9.1f} {r.torch_us:9.1f} "
                     f"{r.baseline:12s} {r.speedup:7.2f}  {r.verdict}"
                     + (f"  ({r.note})" if r.note else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, interpreter, tiny shapes")
    ap.add_argument("--no-flex", action="store_true", help="skip the FlexAttention baseline")
    ap.add_argument("--budget-s", type=float, default=90.0,
                    help="after this many seconds, skip the optional timings (split "
                         "variants, compiled flex)")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--table", help="also write the table here")
    args = ap.parse_args(argv)
    if args.dry_run:  # before the first kernel module is imported (all_cases imports them)
        os.environ.setdefault("TRITON_INTERPRET", "1")
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("bench.kernels: no CUDA device; use --dry-run on CPU", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if cuda else "cpu")
    global CHECK_SPEED
    CHECK_SPEED = cuda
    torch.manual_seed(0)
    flex = None if (args.no_flex or not cuda) else flex_attention()
    deadline = time.monotonic() + args.budget_s
    timing = case_timing(cuda)
    rows, failed = [], 0
    for case in all_cases(dev, torch.float16, FULL if cuda else DRY, flex):
        try:
            row = run_case(case, timing, deadline)
        except Exception as exc:  # noqa: BLE001 - keep going: the table shows what broke
            failed += 1
            row = Row(case.kernel, case.shape, case.layout, math.inf, math.nan, math.nan, "-",
                      math.nan, f"FAILED {exc!r}"[:200])
        rows.append(row)
        if args.table:  # rewritten after every case: a killed run still leaves a table
            with open(args.table, "w") as f:
                f.write(table(rows) + "\n")
        print(f"{row.kernel:10s} {row.shape:5s} {row.layout:28s} err={row.err:.2e} "
              f"triton={row.triton_us:.1f}us launch={row.launch_us:.1f}us "
              f"torch={row.torch_us:.1f}us ({row.baseline}) "
              f"speedup={row.speedup:.2f} {row.note}", flush=True)
    text = table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) | {"verdict": r.verdict} for r in rows], f, indent=1)
    print(text)
    return 1 if failed or any(r.verdict != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
