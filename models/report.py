"""`python -m models.report DIR`: held-out figures of a checkpoint for TRAINING.md: AR
perplexity and draft/AR-greedy agreement by offset for several block lengths."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from models.batch import Chunk, ChunkBatch
from models.checkpoint import load_checkpoint
from models.probe import draft_agreement
from models.train import prepare_data, windows


@torch.no_grad()
def report(model_dir: Path, data: Path, num_windows: int, blocks: list[int]) -> dict:
    model = load_checkpoint(model_dir)
    _, streams = prepare_data(data, model.config.vocab_size)
    gen = torch.Generator().manual_seed(4321)
    seqs = windows(streams["heldout"], 32, 257, gen)
    logits = model(ChunkBatch.from_chunks([Chunk.causal(s[:-1].tolist()) for s in seqs])).logits
    nll = torch.nn.functional.cross_entropy(logits, seqs[:, 1:].reshape(-1)).item()
    prefixes = windows(streams["heldout"], num_windows, 96, gen)
    out = {"model": str(model_dir), "heldout_ppl": round(math.exp(nll), 3), "blocks": {}}
    for b in blocks:
        agree = draft_agreement(model, prefixes, b)
        out["blocks"][b] = {k: ([round(x, 3) for x in v] if isinstance(v, list) else round(v, 3))
                            for k, v in agree.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m models.report", description=__doc__)
    p.add_argument("model_dir", type=Path)
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--windows", type=int, default=128)
    p.add_argument("--blocks", type=int, nargs="+", default=[4, 8, 16])
    args = p.parse_args(argv)
    print(json.dumps(report(args.model_dir, args.data, args.windows, args.blocks), indent=1))


if __name__ == "__main__":
    main()
