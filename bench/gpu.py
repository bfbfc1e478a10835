"""An 8B-shaped model on one GPU (issue 13 point 4): forward time of every chunk shape the
modes use against the HBM bound, the sync-free step check, speculation efficiency, and a
measured cost profile for the SLO policy. Imports no Ray, pydantic or FastAPI.

    python -m bench.gpu                 # CUDA: Llama-3-8B shape, random bf16 weights
    python -m bench.gpu --cpu           # dry run: tiny shapes, Triton interpreter

- Weights are random (made on the device, nothing downloaded), so acceptance is not
  measured here: speculation efficiency is (batch-1 decode forward x the mode's forwards
  per iteration) / the mode's time per iteration, which is what it equals at any acceptance.
- HBM bound = (weights read + cached K/V read) / measured device-to-device copy bandwidth.
- Sync-free: each shape's executor step runs once under
  torch.cuda.set_sync_debug_mode("error"); "ok" or the error is in the table.
- CUDA graphs: not written yet (issue 13 point 3 waits for a device); the column says so.
- The profile (bench/slo_profile.json's form: cost from this run, acceptance traces copied
  from that file and labelled so) goes to <out>/profiles/<device>-<model>.json; copy it into
  bench/profiles/ for model_server to pick up.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import torch

from bench.gpu_shapes import (
    LLAMA3_8B,
    TINY,
    copy_bandwidth,
    kv_bytes_read,
    time_it,
    weight_bytes_read,
)
from engine.executor import ModelExecutor
from engine.step_inputs import StepInputs, pack_plan
from engine.synthetic import Shape, blocks_per_request, mode_shapes, plan_for
from models.config import ModelConfig
from models.fuse import fuse_projections
from models.transformer import TriModeLM

ROOT = Path(__file__).resolve().parent.parent


def random_model(config: ModelConfig, device: torch.device, dtype: torch.dtype,
                 seed: int = 0) -> TriModeLM:
    """Random weights (normal(0, 0.02), norms at 1) made directly on the device."""
    with torch.device("meta"):
        model = TriModeLM(config).to(dtype)
    model = model.to_empty(device=device).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return fuse_projections(model)


def sync_check(executor: ModelExecutor, plan) -> str:  # noqa: ANN001
    """Run one step with CUDA's sync debug mode set to error."""
    if executor.device.type != "cuda":
        return "n/a (cpu)"
    torch.cuda.set_sync_debug_mode("error")
    try:
        executor.step(plan)
        return "ok"
    except RuntimeError as err:
        return "SYNC: " + str(err).splitlines()[0][:60]
    finally:
        torch.cuda.set_sync_debug_mode(0)


def measure_shape(executor: ModelExecutor, shape: Shape, args: argparse.Namespace,
                  blocks_each: int, bandwidth: float) -> dict:
    model, config = executor.model, executor.model.config
    plan = plan_for(shape, config, args.context, args.block_size, blocks_each)
    values, layout = pack_plan(plan.works)
    inputs = StepInputs.unpack(executor.io.upload(values), layout)
    dev = executor.device
    with torch.inference_mode():
        fwd = time_it(lambda: model(inputs.batch, executor.caches, inputs.logits_rows), dev,
                      args.repeats, args.warmup)
    step = time_it(lambda: executor.step(plan), dev, args.repeats, args.warmup)
    elem = executor.caches[0][0].element_size()
    nbytes = weight_bytes_read(model, shape.num_tokens) + kv_bytes_read(
        config, shape, args.context, elem)
    bound = nbytes / bandwidth
    return {"shape": shape.name, "kind": shape.kind, "batch": shape.batch,
            "block": shape.block, "tokens": shape.num_tokens, "forward_ms": 1e3 * fwd,
            "step_ms": 1e3 * step, "bound_ms": 1e3 * bound, "vs_bound": fwd / bound,
            "graphs_ms": None, "sync": sync_check(executor, plan)}


def efficiency(rows: list[dict]) -> list[dict]:
    """Per speculative option at batch 1: decode forward x forwards per iteration / the
    option's forward time per iteration (target >= 0.9 on the GPU)."""
    by = {(r["kind"], r["block"], r["batch"]): r["forward_ms"] for r in rows}
    t1 = by.get(("decode", 1, 1))
    out = []
    if t1 is None:
        return out
    for (kind, block, batch), ms in sorted(by.items()):
        if batch != 1:
            continue
        if kind == "verify" and ("draft", block, 1) in by:
            out.append({"option": f"spec_linear/{block}",
                        "efficiency": 2 * t1 / (ms + by[("draft", block, 1)])})
        elif kind == "quadratic":
            out.append({"option": f"spec_quadratic/{block}", "efficiency": t1 / ms})
    return out


def cost_profile(executor: ModelExecutor, args: argparse.Namespace, blocks_each: int,
                 device_name: str, model_name: str, wall_s: float) -> dict:
    """bench/slo_profile.json's form: [[tokens, requests, seconds]] of executor steps over
    mixes of the modes' shapes; acceptance traces copied from the CPU profile."""
    points = []
    for shape in profile_shapes(args):
        plan = plan_for(shape, executor.model.config, args.context, args.block_size,
                        blocks_each)
        s = time_it(lambda plan=plan: executor.step(plan), executor.device, args.repeats,
                    min(1, args.warmup))
        points.append([shape.num_tokens, shape.batch, round(s, 6)])
    base = json.loads((ROOT / "bench" / "slo_profile.json").read_text())
    meta = {"measured": time.strftime("%Y-%m-%d %H:%M:%S"), "kind": "measured",
            "device": device_name, "model": model_name, "torch": torch.__version__,
            "context_tokens": args.context, "seconds": round(wall_s),
            "source": "bench/gpu.py: median executor step time per (tokens, requests)",
            "traces": "copied from bench/slo_profile.json (tandem-tiny on CPU): random "
                      "weights accept nothing, so acceptance is not measured here"}
    return {"meta": meta, "cost": sorted(points), "traces": base["traces"]}


def profile_shapes(args: argparse.Namespace) -> list[Shape]:
    shapes = [Shape(f"decode b={b}", "decode", b, 1) for b in args.profile_batches]
    for b in args.profile_batches[: max(1, len(args.profile_batches) // 2)]:
        for block in args.linear[:2]:
            shapes.append(Shape(f"verify B={block} b={b}", "verify", b, block))
        for block in args.quadratic[:2]:
            shapes.append(Shape(f"quadratic B={block} b={b}", "quadratic", b, block))
    return shapes


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def table(rows: list[dict], eff: list[dict], header: str) -> str:
    lines = [header,
             f"{'shape':<22}{'tokens':>7}{'fwd ms':>10}{'step ms':>10}{'bound ms':>10}"
             f"{'x bound':>9}  {'graphs':<8}{'sync-free'}"]
    for r in rows:
        lines.append(f"{r['shape']:<22}{r['tokens']:>7}{r['forward_ms']:>10.3f}"
                     f"{r['step_ms']:>10.3f}{r['bound_ms']:>10.3f}{r['vs_bound']:>9.2f}  "
                     f"{'n/a':<8}{r['sync']}")
    lines.append("speculation efficiency at batch 1 (decode fwd x forwards per iteration / "
                 "iteration time; target >= 0.9):")
    lines += [f"  {e['option']:<20}{e['efficiency']:.2f}" for e in eff]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", help="dry run: tiny model, interpreter")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/tandem_gpu")))
    p.add_argument("--context", type=int, default=None, help="cached tokens per request")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--decode", type=int, nargs="+", default=None)
    p.add_argument("--linear", type=int, nargs="+", default=None)
    p.add_argument("--quadratic", type=int, nargs="+", default=None)
    p.add_argument("--profile-batches", type=int, nargs="+", default=None)
    args = p.parse_args(argv)
    full = {"context": 1024, "repeats": 10, "warmup": 3, "decode": [1, 8, 32, 64],
            "linear": [4, 8, 16], "quadratic": [3, 4, 6, 8],
            "profile_batches": [1, 2, 4, 8, 16, 32, 64]}
    dry = {"context": 24, "repeats": 1, "warmup": 0, "decode": [1, 2], "linear": [3],
           "quadratic": [3], "profile_batches": [1]}
    for key, value in (dry if args.cpu else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.cpu:
        os.environ.setdefault("TANDEM_KERNELS", "triton")
        os.environ.setdefault("TRITON_INTERPRET", "1")
        device, dtype, config, model_name = torch.device("cpu"), torch.float32, TINY, "tiny"
        device_name = "cpu"
    elif not torch.cuda.is_available():
        raise SystemExit("bench.gpu: no CUDA device; use --cpu for the dry run")
    else:
        device, dtype, config = torch.device("cuda"), torch.bfloat16, LLAMA3_8B
        device_name, model_name = torch.cuda.get_device_name(0), "llama3-8b-shape"
    model = random_model(config, device, dtype)
    shapes = mode_shapes(args.decode, args.linear, args.quadratic)
    max_chunk = max(s.tokens_per_request for s in shapes + profile_shapes(args))
    blocks_each = blocks_per_request(args.context, max_chunk, args.block_size)
    max_batch = max(s.batch for s in shapes + profile_shapes(args))
    executor = ModelExecutor(model, max_batch * blocks_each, args.block_size)
    bandwidth = copy_bandwidth(device, (2**30) if device.type == "cuda" else 2**23)
    rows = [measure_shape(executor, s, args, blocks_each, bandwidth) for s in shapes]
    eff = efficiency(rows)
    profile = cost_profile(executor, args, blocks_each, device_name, model_name,
                           time.perf_counter() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profiles").mkdir(exist_ok=True)
    profile_path = args.out / "profiles" / f"{slug(device_name)}-{model_name}.json"
    profile_path.write_text(json.dumps(profile, separators=(",", ":")) + "\n")
    header = (f"bench.gpu: {device_name}, {model_name} {str(dtype).removeprefix('torch.')}, "
              f"context {args.context}, copy bandwidth {bandwidth / 1e9:.1f} GB/s, "
              f"kernels {os.environ.get('TANDEM_KERNELS', 'auto')}, "
              f"{time.perf_counter() - start:.0f} s")
    text = table(rows, eff, header)
    (args.out / "gpu.json").write_text(json.dumps(
        {"rows": rows, "efficiency": eff, "bandwidth": bandwidth, "profile": str(profile_path)},
        indent=1) + "\n")
    (args.out / "gpu_table.txt").write_text(text + "\n")
    print(f"profile: {profile_path}")
    print(text)
    return 0 if all(r["sync"] in ("ok", "n/a (cpu)") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
