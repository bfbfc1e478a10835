"""Every chunk shape's executor step under CUDA's sync debug mode, with the kernels that
TANDEM_KERNELS names: scripts/gpu_check.sh runs it with `torch` (the reference path, which
on CUDA serves sliding-window models and CUDA-graph capture must not sync), bench.gpu checks
the Triton path on the 8B shape. A small random model: the check is about host reads, not
speed. With --cpu the same steps run unchecked (a dry run of the code path); on the CPU
tests/engine/test_sync_free_step_meta.py is the check.

    TANDEM_KERNELS=torch python -m bench.sync_steps          # CUDA
    TANDEM_KERNELS=torch python -m bench.sync_steps --cpu    # dry run
"""

from __future__ import annotations

import argparse
import os

import torch

from bench.gpu import random_model, sync_check
from bench.gpu_shapes import TINY
from engine.executor import ModelExecutor
from engine.synthetic import blocks_per_request, mode_shapes, plan_for


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sync_steps",
                                description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", help="dry run on the CPU (nothing checked)")
    p.add_argument("--context", type=int, default=40, help="cached tokens per request")
    p.add_argument("--block-size", type=int, default=16)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("bench.sync_steps: no CUDA device; use --cpu for the dry run")
    device = torch.device("cpu" if args.cpu else "cuda")
    dtype = torch.float32 if args.cpu else torch.bfloat16
    model = random_model(TINY, device, dtype)
    shapes = mode_shapes([1, 8], [4], [3])
    blocks_each = blocks_per_request(args.context, max(s.tokens_per_request for s in shapes),
                                     args.block_size)
    executor = ModelExecutor(model, max(s.batch for s in shapes) * blocks_each, args.block_size)
    kernels = os.environ.get("TANDEM_KERNELS", "auto")
    print(f"bench.sync_steps: {device.type}, kernels {kernels}, {dtype}, context {args.context}")
    results = []
    for shape in shapes:
        plan = plan_for(shape, model.config, args.context, args.block_size, blocks_each)
        executor.step(plan)  # first run (allocations, library handles) outside the check
        results.append(sync_check(executor, plan))
        print(f"  {shape.name:<22}{results[-1]}", flush=True)
    return 0 if all(r in ("ok", "n/a (cpu)") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
