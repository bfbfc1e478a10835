"""Step plans of the chunk shapes the decoding modes put on a device, built without requests
or a scheduler: for benchmarks (bench/gpu.py, bench/step_overhead.py) and for the start-up
calibration of a cost profile (engine/cost_profile.py).

Every request of a shape has `context` tokens in the cache and its own blocks; the chunks
are laid out as the modes lay them out (engine/modes: decode = one causal token; linear
draft = [seed, MASK x (B-1)] bidirectional; linear verify = B causal tokens; quadratic =
the B(B+1)-token layout of engine/modes/spec_quadratic.py), so sampling, acceptance and
the KV store run as in serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.modes.spec_quadratic import quadratic_chunk
from engine.plan import ChunkWork, StepPlan
from models.batch import Chunk
from models.config import ModelConfig

# shape kind -> (ChunkWork.kind, mode) as the modes would plan it
WORK_KIND = {"decode": ("ar", "ar"), "draft": ("draft", "spec_linear"),
             "verify": ("verify", "spec_linear"), "quadratic": ("quadratic", "spec_quadratic")}


@dataclass(frozen=True)
class Shape:
    name: str  # e.g. "decode b=8", "linear verify B=4", "quadratic B=4"
    kind: str  # decode | draft | verify | quadratic
    batch: int  # requests
    block: int  # B (1 for decode)

    def __post_init__(self) -> None:
        if self.kind not in ("decode", "draft", "verify", "quadratic"):
            raise ValueError(f"Shape.kind: unknown chunk kind {self.kind!r}")
        if self.batch < 1 or self.block < (1 if self.kind == "decode" else 2):
            raise ValueError(f"Shape {self.name!r}: batch {self.batch}, block {self.block}")

    @property
    def tokens_per_request(self) -> int:
        return {"decode": 1, "draft": self.block, "verify": self.block,
                "quadratic": self.block * (self.block + 1)}[self.kind]

    @property
    def num_tokens(self) -> int:
        return self.batch * self.tokens_per_request


def mode_shapes(decode: list[int], linear: list[int], quadratic: list[int],
                spec_batch: int = 1) -> list[Shape]:
    """Decode at each batch; linear draft and verify and quadratic at each block, batch 1
    (the speculative modes' case: a lone request leaves the device idle)."""
    out = [Shape(f"decode b={b}", "decode", b, 1) for b in decode]
    for b in linear:
        out += [Shape(f"linear draft B={b}", "draft", spec_batch, b),
                Shape(f"linear verify B={b}", "verify", spec_batch, b)]
    out += [Shape(f"quadratic B={b}", "quadratic", spec_batch, b) for b in quadratic]
    return out


def blocks_per_request(context: int, max_chunk: int, block_size: int) -> int:
    return math.ceil((context + max_chunk) / block_size)


def plan_for(shape: Shape, config: ModelConfig, context: int, block_size: int,
             blocks_each: int) -> StepPlan:
    """One work per request; request r owns blocks [r * blocks_each, (r + 1) * blocks_each)."""
    works = []
    b, p, mask = shape.block, context, config.mask_token_id

    def token(i: int) -> int:  # ordinary ids, clear of the special ones
        return 10 + i % (config.vocab_size - 10)

    for r in range(shape.batch):
        table = list(range(r * blocks_each, (r + 1) * blocks_each))
        seed = token(1000 + r)
        if shape.kind == "decode":
            chunk, writes, rows, drafts = Chunk.causal([seed], p, p, table), 1, [0], []
        elif shape.kind == "draft":
            chunk = Chunk.bidirectional([seed] + [mask] * (b - 1), p, p, table)
            writes, rows, drafts = 0, list(range(1, b)), []
        elif shape.kind == "verify":
            drafts = [token(2000 + 7 * r + i) for i in range(b - 1)]
            chunk = Chunk.causal([seed] + drafts, p, p, table)
            writes, rows = b, list(range(b))
        else:
            drafts = [token(2000 + 7 * r + i) for i in range(b - 1)]
            chunk = quadratic_chunk(seed, drafts, p, mask, p, table)
            writes, rows = b, list(range(b + b * b))
        slots = [table[(p + j) // block_size] * block_size + (p + j) % block_size
                 for j in range(writes)]
        positions = [chunk.positions[i] + 1 for i in rows]  # noise keys: timing only
        kind, mode = WORK_KIND[shape.kind]
        works.append(ChunkWork(f"r{r}", kind, mode, chunk, slots, rows, positions,
                               verify_drafts=drafts, seed=r))
    return StepPlan(works)
