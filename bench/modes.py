"""`tandem bench modes`: every decoding mode side by side on held-out prompts of the shipped
model, at batch 1 and batch 8, greedy. Prints tokens per forward, tokens per second and the
ratio to AR measured in the same run; for diffusion, agreement with AR's greedy tokens over a
threshold sweep.

Tokens per forward = tokens emitted / forward passes, every pass counted once: at batch 1
that is tokens per step, at batch 8 all requests' tokens over the steps that carried them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from engine.engine import EngineConfig, LLMEngine
from engine.params import DecodeParams, SamplingParams
from engine.scheduler import SchedulerConfig
from models.checkpoint import DEFAULT_MODEL_DIR
from models.heldout import load_prompts


@dataclass
class Row:
    mode: str
    block: int | None
    batch: int
    threshold: float | None
    tokens: int
    forwards: int
    seconds: float
    tokens_per_forward: float
    tokens_per_s: float
    speed_vs_ar: float = 0.0
    tokens_per_iteration: float | None = None  # speculation: tokens per verify pass
    agreement_with_ar: float | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tandem bench modes", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--device", default="cpu")
    p.add_argument("--prompts", type=int, default=8, help="held-out prompts per batch size")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--linear-blocks", type=int, nargs="+", default=[4, 8])
    p.add_argument("--quadratic-blocks", type=int, nargs="+", default=[3, 4, 6])
    p.add_argument("--diffusion-block", type=int, default=8)
    p.add_argument("--thresholds", type=float, nargs="+",
                   default=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--warmup-runs", type=int, default=None,
                   help="untimed runs of each measured mode, block, threshold and batch before "
                        "its timed run (default: 1 on CUDA, 0 on CPU)")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def measure(engine: LLMEngine, prompts: list[str], batch: int, decode: DecodeParams,
            max_tokens: int) -> tuple[Row, list[list[int]]]:
    """Run prompts in groups of `batch` (continuous batching inside a group)."""
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    mode = decode.mode.value
    tokens: list[list[int]] = []
    steps = verifies = spec_tokens = 0
    start = time.perf_counter()
    for i in range(0, len(prompts), batch):
        before = engine.num_steps
        outs = engine.generate(prompts[i:i + batch], sampling, decode)
        steps += engine.num_steps - before
        tokens += [o.token_ids for o in outs]
        if decode.block_length:
            verifies += sum(o.drafted_by_mode.get(mode, 0) for o in outs) \
                // (decode.block_length - 1)
            spec_tokens += sum(o.tokens_by_mode.get(mode, 0) for o in outs)
    seconds = time.perf_counter() - start
    n = sum(len(t) for t in tokens)
    row = Row(mode, decode.block_length, batch,
              decode.threshold if mode == "diffusion" else None,
              n, steps, round(seconds, 3), round(n / steps, 3), round(n / seconds, 1))
    if verifies:
        row.tokens_per_iteration = round(spec_tokens / verifies, 3)
    return row, tokens


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> float:
    same = sum(a == b for t, r in zip(tokens, reference, strict=True)
               for a, b in zip(t, r, strict=False))
    return same / max(1, sum(len(r) for r in reference))


def measure_warm(engine: LLMEngine, prompts: list[str], batch: int, decode: DecodeParams,
                 max_tokens: int, warmup_runs: int) -> tuple[Row, list[list[int]]]:
    """measure() after warmup_runs untimed runs of the very same work: on CUDA every Triton
    specialization the timed run meets (chunk lengths, token counts, block-table widths) is
    compiled before its clock starts. The thirteenth session's H200 rows had each mode's first
    compiles inside its tok/s (AR 32.7 tok/s)."""
    for _ in range(warmup_runs):
        measure(engine, prompts, batch, decode, max_tokens)
    return measure(engine, prompts, batch, decode, max_tokens)


def run_modes(engine: LLMEngine, prompts: list[str], args: argparse.Namespace,
              warmup_runs: int) -> list[Row]:
    rows: list[Row] = []

    def timed(batch: int, decode: DecodeParams) -> tuple[Row, list[list[int]]]:
        return measure_warm(engine, prompts, batch, decode, args.max_tokens, warmup_runs)

    for batch in args.batches:
        ar, ar_tokens = timed(batch, DecodeParams(mode="ar"))
        group = [ar]
        for b in args.linear_blocks:
            group.append(timed(batch, DecodeParams(mode="spec_linear", block_length=b))[0])
        for b in args.quadratic_blocks:
            group.append(timed(batch, DecodeParams(mode="spec_quadratic", block_length=b))[0])
        for th in args.thresholds:
            row, toks = timed(batch, DecodeParams(mode="diffusion",
                                                  block_length=args.diffusion_block,
                                                  threshold=th))
            row.agreement_with_ar = round(agreement(toks, ar_tokens), 3)
            group.append(row)
        for row in group:
            row.speed_vs_ar = round(row.tokens_per_s / ar.tokens_per_s, 3)
        rows += group
    return rows


def run(args: argparse.Namespace) -> list[Row]:
    config = EngineConfig(num_blocks=1024, scheduler=SchedulerConfig(max_batch_tokens=8192))
    engine = LLMEngine.from_checkpoint(args.model, config, args.device)
    prompts = load_prompts(args.model, num=args.prompts)
    engine.generate(prompts[:1], SamplingParams(max_tokens=8))  # first touch (all devices)
    warmup_runs = args.warmup_runs
    if warmup_runs is None:  # on CUDA the first runs compile; the CPU has nothing to warm
        warmup_runs = 1 if torch.device(args.device).type == "cuda" else 0
    return run_modes(engine, prompts, args, warmup_runs)


def table(rows: list[Row]) -> str:
    head = f"{'mode':<15}{'B':>3}{'batch':>6}{'thr':>6}{'tok/fwd':>9}{'tok/iter':>9}" \
           f"{'tok/s':>9}{'vs AR':>7}{'agree':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        thr = f"{r.threshold:.2f}" if r.threshold is not None else "-"
        agree = f"{r.agreement_with_ar:.2f}" if r.agreement_with_ar is not None else "-"
        it = f"{r.tokens_per_iteration:.2f}" if r.tokens_per_iteration else "-"
        lines.append(f"{r.mode:<15}{r.block or '-':>3}{r.batch:>6}{thr:>6}"
                     f"{r.tokens_per_forward:>9.2f}{it:>9}{r.tokens_per_s:>9.1f}"
                     f"{r.speed_vs_ar:>7.2f}{agree:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    if args.json:
        print(json.dumps({"device": args.device, "rows": [asdict(r) for r in rows]}))
    else:
        print(table(rows))


if __name__ == "__main__":
    main()
