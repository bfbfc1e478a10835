"""What one step runs and what it returns: the only link between scheduler and executor.

Plain data (lists, not tensors), so that a plan can travel to Ray shard workers as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.batch import Chunk
from policies.modes import ChunkKind


@dataclass
class ChunkWork:
    """One request's share of a step: a chunk, where its KV goes, which rows to sample."""

    request_id: str
    kind: ChunkKind  # a plain string is converted
    mode: str  # a policies.modes.Mode value, or "prefill" / "score" for those kinds
    chunk: Chunk
    write_slots: list[int] = field(default_factory=list)  # KV of chunk rows 0.. goes here
    sample_rows: list[int] = field(default_factory=list)  # chunk-relative rows to sample
    sample_positions: list[int] = field(default_factory=list)  # noise key of each sampled row
    verify_drafts: list[int] = field(default_factory=list)  # compared with sampled rows 0..
    score_rows: list[int] = field(default_factory=list)  # rows whose given token is scored
    score_tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.kind = ChunkKind(self.kind)
        n = len(self.chunk.tokens)
        if len(self.write_slots) > n:
            raise ValueError(f"{len(self.write_slots)} write slots for a chunk of {n}")
        if len(self.sample_rows) != len(self.sample_positions):
            raise ValueError("sample_rows and sample_positions differ in length")
        if len(self.verify_drafts) > len(self.sample_rows):
            raise ValueError("more drafts to verify than sampled rows")
        if len(self.score_rows) != len(self.score_tokens):
            raise ValueError("score_rows and score_tokens differ in length")

    @property
    def num_tokens(self) -> int:
        return len(self.chunk.tokens)


@dataclass
class StepPlan:
    works: list[ChunkWork]

    @property
    def num_tokens(self) -> int:
        return sum(w.num_tokens for w in self.works)


@dataclass
class WorkResult:
    tokens: list[int]  # one per sampled row
    probs: list[float]  # probability of each sampled token (its confidence)
    accepted: int = 0  # verify: leading drafts equal to the verifier's tokens
    scores: list[float] = field(default_factory=list)  # probability of each scored token


@dataclass
class StepOutput:
    results: list[WorkResult]
    elapsed_s: float
