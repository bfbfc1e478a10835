"""A step's plan as device tensors from one packed upload.

`pack_plan` turns the plan's Python lists into one list of int64 (floats travel as their
float32 bits) plus the host-side sizes; `StepInputs.unpack` slices the uploaded buffer on
the device. Everything the forward, the KV store, sampling and acceptance need is in it,
so no other host->device copy and no device->host read happens before the results.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import torch

from engine.plan import ChunkWork
from models.batch import ChunkBatch


def float_bits(values: list[float]) -> list[int]:
    """float32 bit patterns as signed int32 values (exactly invertible on the device)."""
    return array("i", array("f", values).tobytes()).tolist()


def floats_from_bits(values: list[int]) -> list[float]:
    """The inverse of float_bits, on the host."""
    return array("f", array("i", values).tobytes()).tolist()


class Packer:
    """Appends named int lists to one flat list and remembers where each went."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.spans: dict[str, tuple[int, int]] = {}

    def add(self, name: str, values: list[int]) -> None:
        self.spans[name] = (len(self.values), len(values))
        self.values.extend(values)


@dataclass(frozen=True)
class PlanLayout:
    """Host-side facts of a packed plan: spans and the sizes that shape the launches."""

    spans: dict[str, tuple[int, int]]
    num_chunks: int
    max_blocks: int  # block-table width
    max_chunk_len: int
    max_context_len: int
    num_sample: int  # sampled rows (the first rows of the logits)
    num_score: int  # scored rows (after them)
    draft_width: int  # columns of the acceptance matrix
    sample_counts: tuple[int, ...]  # per work, for cutting the results
    score_counts: tuple[int, ...]


def pack_plan(works: list[ChunkWork]) -> tuple[list[int], PlanLayout]:
    chunks = [w.chunk for w in works]
    offsets = [0]
    for c in chunks:
        offsets.append(offsets[-1] + len(c.tokens))
    max_blocks = max(1, max(len(c.block_table) for c in chunks))
    p = Packer()
    for name in ("tokens", "positions", "causal_limit", "block_lo", "block_hi"):
        p.add(name, [x for c in chunks for x in getattr(c, name)])
    p.add("cu_seqlens", offsets)
    p.add("context_lens", [c.context_len for c in chunks])
    p.add("block_tables", [b for c in chunks for b in
                           list(c.block_table) + [-1] * (max_blocks - len(c.block_table))])
    sample_rows = [offsets[i] + r for i, w in enumerate(works) for r in w.sample_rows]
    score_rows = [offsets[i] + r for i, w in enumerate(works) for r in w.score_rows]
    p.add("logits_rows", sample_rows + score_rows)
    p.add("store_rows", [offsets[i] + j for i, w in enumerate(works)
                         for j in range(len(w.write_slots))])
    p.add("store_slots", [s for w in works for s in w.write_slots])
    _pack_sampling(p, works)
    width = _pack_drafts(p, works)
    p.add("score_tokens", [t for w in works for t in w.score_tokens])
    layout = PlanLayout(
        p.spans, len(works), max_blocks, max(len(c.tokens) for c in chunks),
        max(c.context_len for c in chunks), len(sample_rows), len(score_rows), width,
        tuple(len(w.sample_rows) for w in works), tuple(len(w.score_rows) for w in works))
    return p.values, layout


def _pack_sampling(p: Packer, works: list[ChunkWork]) -> None:
    """Per sampled row: temperature, top-k, top-p, seed and noise position."""
    rows = [w for w in works for _ in w.sample_positions]  # one entry per sampled row
    p.add("temperature", float_bits([w.temperature for w in rows]))
    p.add("top_k", [w.top_k for w in rows])
    p.add("top_p", float_bits([w.top_p for w in rows]))
    p.add("seeds", [w.seed for w in rows])
    p.add("sample_positions", [x for w in works for x in w.sample_positions])


def _pack_drafts(p: Packer, works: list[ChunkWork]) -> int:
    """[N, width] drafts (-1 pad) and the sampled row each is compared with."""
    width = max([len(w.verify_drafts) for w in works] + [1])
    draft, target, start = [], [], 0
    for w in works:
        n = len(w.verify_drafts)
        draft += list(w.verify_drafts) + [-1] * (width - n)
        target += list(range(start, start + n)) + [0] * (width - n)
        start += len(w.sample_rows)
    p.add("draft", draft)
    p.add("draft_target", target)
    p.add("num_draft", [len(w.verify_drafts) for w in works])
    return width


@dataclass
class StepInputs:
    """The plan on the device (views of one uploaded buffer, cast on the device)."""

    batch: ChunkBatch
    logits_rows: torch.Tensor  # [S + C] int64
    store_rows: torch.Tensor  # [W] int64
    store_slots: torch.Tensor  # [W] int64
    temperature: torch.Tensor  # [S] float32
    top_k: torch.Tensor  # [S] int32
    top_p: torch.Tensor  # [S] float32
    seeds: torch.Tensor  # [S] int64
    sample_positions: torch.Tensor  # [S] int64
    draft: torch.Tensor  # [N, width] int64
    draft_target: torch.Tensor  # [N, width] int64
    num_draft: torch.Tensor  # [N] int64
    score_tokens: torch.Tensor  # [C] int64

    @staticmethod
    def unpack(buf: torch.Tensor, layout: PlanLayout) -> StepInputs:
        def get(name: str) -> torch.Tensor:
            start, n = layout.spans[name]
            return buf[start:start + n]

        def i32(name: str) -> torch.Tensor:
            return get(name).to(torch.int32)

        def f32(name: str) -> torch.Tensor:
            return get(name).to(torch.int32).view(torch.float32)

        n, width = layout.num_chunks, layout.draft_width
        batch = ChunkBatch(
            tokens=get("tokens"), positions=get("positions"), cu_seqlens=i32("cu_seqlens"),
            causal_limit=i32("causal_limit"), block_lo=i32("block_lo"),
            block_hi=i32("block_hi"), context_lens=i32("context_lens"),
            block_tables=i32("block_tables").view(n, layout.max_blocks),
            max_chunk_len=layout.max_chunk_len, max_context_len=layout.max_context_len)
        return StepInputs(
            batch, get("logits_rows"), get("store_rows"), get("store_slots"),
            f32("temperature"), i32("top_k"), f32("top_p"), get("seeds"),
            get("sample_positions"), get("draft").view(n, width),
            get("draft_target").view(n, width), get("num_draft"), get("score_tokens"))
