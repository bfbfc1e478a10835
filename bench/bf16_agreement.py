"""Greedy agreement of bfloat16 with float32 on CPU (the torch reference kernels): the same
prompts decoded in both dtypes, AR, through the engine.

    python -m bench.bf16_agreement --num-prompts 64 --max-tokens 64

Reports the share of prompts whose whole greedy output is identical, the mean length of the
common prefix (tokens until the first divergence), and the share of all generated tokens that
lie inside that common prefix.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from engine.engine import EngineConfig, LLMEngine
from engine.params import SamplingParams
from models.checkpoint import DEFAULT_MODEL_DIR


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    args = p.parse_args()
    rows = [json.loads(line) for line in (args.model / "heldout_prompts.jsonl").open()]
    prompts = [r["text"] for r in rows[: args.num_prompts]]
    sp = SamplingParams(max_tokens=args.max_tokens, ignore_eos=True)
    outs, secs = {}, {}
    for dtype in ("float32", "bfloat16"):
        engine = LLMEngine.from_checkpoint(args.model, EngineConfig(num_blocks=1024),
                                           dtype=dtype)
        start = time.perf_counter()
        outs[dtype] = [o.token_ids for o in engine.generate(prompts, sp)]
        secs[dtype] = time.perf_counter() - start
    prefixes = [common_prefix(a, b) for a, b in zip(outs["float32"], outs["bfloat16"],
                                                      strict=True)]
    total = sum(len(a) for a in outs["float32"])
    print(json.dumps({
        "model": str(args.model), "num_prompts": len(prompts), "max_tokens": args.max_tokens,
        "identical_outputs": sum(p == args.max_tokens for p in prefixes) / len(prompts),
        "mean_common_prefix": sum(prefixes) / len(prompts),
        "tokens_in_common_prefix": sum(prefixes) / total,
        "seconds": {k: round(v, 1) for k, v in secs.items()}}, indent=2))


if __name__ == "__main__":
    main()
