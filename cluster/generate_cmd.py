"""`tandem generate`: one prompt, any decoding mode, on the shipped model by default."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine.engine import EngineConfig, LLMEngine, StepFailed
from engine.params import DecodeParams, Mode, SamplingParams
from models.checkpoint import DEFAULT_MODEL_DIR
from models.dtype import CHOICES
from models.errors import CheckpointError

MODES = [m.value for m in Mode if m is not Mode.AUTO]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tandem generate", description=__doc__)
    p.add_argument("prompt", help="the text to continue")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR,
                   help="Hugging Face checkpoint directory (default: the shipped model)")
    p.add_argument("--mode", choices=MODES, default=None, help="default: ar (spec_pipelined "
                   "with --disaggregated)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None, help="default: random, printed with --json")
    p.add_argument("--block-length", type=int, default=None)
    p.add_argument("--threshold", type=float, default=0.9, help="diffusion commit confidence")
    p.add_argument("--tp", type=int, default=0,
                   help="run through a group of N tensor-parallel Ray shard workers")
    p.add_argument("--disaggregated", action="store_true",
                   help="draft on a draft pool, verify on a verify pool (Ray shard groups); "
                        "--mode defaults to spec_pipelined")
    p.add_argument("--draft-tp", type=int, default=1, help="draft pool ranks (--disaggregated)")
    p.add_argument("--verify-tp", type=int, default=1,
                   help="verify pool ranks (--disaggregated)")
    p.add_argument("--draft-dtype", choices=("float32", "bfloat16", "float16"),
                   default="float32", help="draft pool dtype (--disaggregated)")
    p.add_argument("--hedge", action="store_true", help="draft for every acceptance length "
                   "(--disaggregated)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=CHOICES, default="auto",
                   help="auto: the checkpoint's torch_dtype on CUDA, float32 on CPU")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def build_engine(args: argparse.Namespace) -> LLMEngine:
    config = EngineConfig(num_blocks=256)
    if args.disaggregated:
        from actors.pipelined_engine import PoolShape, disaggregated_engine  # needs Ray
        return disaggregated_engine(args.model, PoolShape(tp=args.verify_tp),
                                    PoolShape(tp=args.draft_tp, dtype=args.draft_dtype),
                                    config, device=args.device, hedge=args.hedge)
    if args.tp:
        from actors.engine_factory import sharded_engine  # needs Ray
        return sharded_engine(args.model, args.tp, config, device=args.device, dtype=args.dtype)
    return LLMEngine.from_checkpoint(args.model, config, args.device, dtype=args.dtype)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode is None:
        args.mode = Mode.SPEC_PIPELINED.value if args.disaggregated else Mode.AR.value
    if args.disaggregated and args.tp:
        print("tandem generate: --tp: give --verify-tp with --disaggregated", file=sys.stderr)
        sys.exit(2)
    try:
        seed = {} if args.seed is None else {"seed": args.seed}
        sampling = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                                  top_p=args.top_p, top_k=args.top_k, **seed)
        decode = DecodeParams(mode=Mode(args.mode), block_length=args.block_length,
                              threshold=args.threshold)
        engine = build_engine(args)
    except (ValueError, CheckpointError) as err:
        print(f"tandem generate: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        start = time.perf_counter()
        out = engine.generate([args.prompt], sampling, decode)[0]
        elapsed = time.perf_counter() - start
    except ValueError as err:
        print(f"tandem generate: {err}", file=sys.stderr)
        sys.exit(2)
    except StepFailed as err:  # e.g. a shard worker died: the rank is named
        print(f"tandem generate: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        engine.executor.shutdown()
    if args.json:
        print(json.dumps({
            "text": out.text, "token_ids": out.token_ids, "num_tokens": len(out.token_ids),
            "num_forwards": out.num_forwards, "mode": args.mode, "seed": out.seed,
            "finish_reason": out.finish_reason, "tokens_per_forward": out.tokens_per_forward,
            "accepted_by_mode": out.accepted_by_mode, "elapsed_s": round(elapsed, 4),
            **pool_forwards(engine)}))
    else:
        print(args.prompt + out.text)


def pool_forwards(engine: LLMEngine) -> dict[str, dict[str, int]]:
    """Forwards per pool of a disaggregated engine ({} for a fused one)."""
    stats = getattr(engine, "pool_stats", None)
    if stats is None:
        return {}
    return {"pool_forwards": {name: s.num_forwards for name, s in stats().items()}}
