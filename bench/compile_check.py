"""Compile every Triton kernel for a GPU on a machine without one.

ptxas ships inside the triton wheel, so the launchers can run against a stand-in driver
that compiles (warm-up mode) and never launches: compile errors, register spills and
shared-memory use show up before any GPU time is spent. Shapes are bench/kernel_cases.py's
(both model shapes, fp16), plus fp32 attention.

    python -m bench.compile_check [--arch 90]
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "0"  # real JIT functions, not the interpreter's

import argparse  # noqa: E402
import contextlib  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from bench import kernel_cases  # noqa: E402
from kernels import attention_triton  # noqa: E402


class _CompileOnlyDriver:
    def __init__(self, arch: int) -> None:
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return self.target


@contextlib.contextmanager
def compile_only(arch: int, sm_count: int, seen: list) -> Iterator[None]:
    """Launches compile and record their kernel instead of running."""
    original_getitem = JITFunction.__getitem__
    original_sm = attention_triton._sm_count

    def getitem(self, grid):  # noqa: ANN001, ANN202
        def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            seen.append((self.fn.__name__, grid, self.run(*args, grid=grid, warmup=True,
                                                          **kwargs)))
        return run

    previous = driver._active
    driver.set_active(_CompileOnlyDriver(arch))
    JITFunction.__getitem__ = getitem
    attention_triton._sm_count = lambda device: sm_count
    try:
        yield
    finally:
        JITFunction.__getitem__ = original_getitem
        attention_triton._sm_count = original_sm
        driver._active = previous


def resource_usage(cubin: bytes) -> str:
    """REG / STACK / LOCAL (spills) / SHARED of a cubin, from the cuobjdump triton ships."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True,
                                  text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            return f"({exc.__class__.__name__})"
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if not found:
        return "(no resource line)"
    reg, stack, shared, local = found.groups()
    return f"regs={reg} stack={stack} local={local} static_smem={shared}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability, 90 = H100")
    ap.add_argument("--sms", type=int, default=132, help="SM count for the split heuristic")
    ap.add_argument("--only", nargs="*", help="kernel names to compile (default: all)")
    args = ap.parse_args(argv)
    dev = torch.device("cpu")
    cases = kernel_cases.all_cases(dev, torch.float16, kernel_cases.FULL)
    cases += [c for c in kernel_cases.all_cases(dev, torch.float32, kernel_cases.DRY)
              if c.kernel == "attention"]
    if args.only:
        cases = [c for c in cases if c.kernel in args.only]
    failures = 0
    for case in cases:
        seen: list = []
        start = time.perf_counter()
        try:
            with compile_only(args.arch, args.sms, seen):
                case.triton()
        except Exception as exc:  # noqa: BLE001 - report every failing case, then fail
            failures += 1
            print(f"FAIL {case.kernel:10s} {case.shape:5s} {case.layout:28s} {exc!r}"[:400])
            continue
        for name, grid, k in seen:
            md = k.metadata
            print(f"ok   {case.kernel:10s} {case.shape:5s} {case.layout:28s} {name:18s} "
                  f"grid={tuple(grid)} warps={md.num_warps} stages={md.num_stages} "
                  f"smem={md.shared} {resource_usage(k.asm['cubin'])} "
                  f"({time.perf_counter() - start:.1f}s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
