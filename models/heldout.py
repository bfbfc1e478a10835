"""Held-out prompts shipped with the default model: snippets of the held-out 5 % of the
standard library (files the model never trained on), cut at line starts. Tests and
benchmarks read them from checkpoints/<model>/heldout_prompts.jsonl."""

from __future__ import annotations

import json
import random
from pathlib import Path

from models import corpus
from models.checkpoint import DEFAULT_MODEL_DIR
from models.tokenizer import TextCodec

PROMPTS_FILE = "heldout_prompts.jsonl"


def build_prompts(codec: TextCodec, num: int, num_tokens: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    files = [f for f in corpus.list_sources() if f.split == "heldout"]
    prompts: list[dict] = []
    while len(prompts) < num:
        f = rng.choice(files)
        lines = corpus.read_text(f.relpath).splitlines(keepends=True)
        if len(lines) < 20:
            continue
        start = rng.randrange(len(lines) - 10)
        text = "".join(lines[start:start + 40])
        ids = codec.encode(text)[:num_tokens]
        if len(ids) < num_tokens:
            continue
        prompts.append({"file": f.relpath, "line": start + 1, "text": codec.decode(ids)})
    return prompts


def load_prompts(model_dir: str | Path = DEFAULT_MODEL_DIR, num: int | None = None) -> list[str]:
    path = Path(model_dir) / PROMPTS_FILE
    with path.open() as fh:
        texts = [json.loads(line)["text"] for line in fh]
    return texts[:num] if num else texts


def main() -> None:
    codec = TextCodec.load(DEFAULT_MODEL_DIR)
    rows = build_prompts(codec, 200, 48)
    with (DEFAULT_MODEL_DIR / PROMPTS_FILE).open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
