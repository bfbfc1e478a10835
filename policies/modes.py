"""The facts about decoding modes, in one table that every package reads (torch-free).

Work is in tokens a mode puts in the batch per forward of one request (the scheduler's
currency, what the cost model is fitted on):
  ar 1; diffusion B (denoise passes, then a commit pass); spec_linear B (a draft pass, then
  a verify pass); spec_quadratic B(B+1) (B verified drafts and B sub-blocks of B masks; its
  first forward is a plain draft pass of B); spec_pipelined B (the verify chunk; its drafts
  run on a separate draft pool, actors/pipelined_engine.py).
docs/ARCHITECTURE.md describes the modes; engine/modes/ implements them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Mode(StrEnum):
    AR = "ar"
    DIFFUSION = "diffusion"
    SPEC_LINEAR = "spec_linear"
    SPEC_QUADRATIC = "spec_quadratic"
    SPEC_PIPELINED = "spec_pipelined"  # linear speculation over a draft pool (disaggregated)
    AUTO = "auto"  # the scheduler chooses among the others, per request and step

    @property
    def is_lossless(self) -> bool:
        """Output equals AR's (auto chooses diffusion only for requests that allow lossy)."""
        return self is not Mode.DIFFUSION


class ChunkKind(StrEnum):
    """What one request's chunk in a step does (engine/plan.py ChunkWork.kind)."""

    PREFILL = "prefill"  # causal chunk over uncached prompt (or recomputed) tokens
    AR = "ar"  # one token, causal
    DRAFT = "draft"  # [seed, MASK x (B-1)], bidirectional, cache read only
    VERIFY = "verify"  # the drafted block, causal, writes the cache
    DENOISE = "denoise"  # diffusion: a bidirectional pass over the block
    COMMIT = "commit"  # diffusion: a causal pass over the finished block
    QUADRATIC = "quadratic"  # verify + next drafts in one forward
    SCORE = "score"  # logprobs of given tokens (the server's scoring pass), no request state


@dataclass(frozen=True)
class ModeFacts:
    mode: Mode
    default_block: int
    kinds: tuple[ChunkKind, ...]  # the chunk kinds its steady-state works carry

    def __post_init__(self) -> None:
        if self.mode is Mode.AUTO:
            raise ValueError("auto is a choice among modes, not a mode with facts")
        if (self.mode is Mode.AR) != (self.default_block == 1) or self.default_block < 1:
            raise ValueError(f"{self.mode}: default block {self.default_block}")

    @property
    def is_lossless(self) -> bool:
        return self.mode.is_lossless

    def draft_tokens(self, block: int) -> int:
        """Tokens one step puts on a separate draft pool: pipelined speculation recomputes
        the block under verification (B) and drafts the next one (B masks)."""
        return 2 * block if self.mode is Mode.SPEC_PIPELINED else 0

    def work_tokens(self, block: int) -> int:
        """Tokens one steady-state forward of one request puts in the batch."""
        if self.mode is Mode.AR:
            return 1
        if self.mode is Mode.SPEC_QUADRATIC:
            return block * (block + 1)
        return block


MODE_FACTS: Mapping[Mode, ModeFacts] = MappingProxyType({f.mode: f for f in (
    ModeFacts(Mode.AR, 1, (ChunkKind.AR,)),
    ModeFacts(Mode.DIFFUSION, 8, (ChunkKind.DENOISE, ChunkKind.COMMIT)),
    ModeFacts(Mode.SPEC_LINEAR, 8, (ChunkKind.DRAFT, ChunkKind.VERIFY)),
    ModeFacts(Mode.SPEC_QUADRATIC, 4, (ChunkKind.DRAFT, ChunkKind.QUADRATIC)),
    # Drafts run on the draft pool; the verify pool's batch holds the B-token verify chunk
    # (or an AR token when the draft pool has nothing ready).
    ModeFacts(Mode.SPEC_PIPELINED, 4, (ChunkKind.VERIFY, ChunkKind.AR)),
)})
CONCRETE_MODES: tuple[Mode, ...] = tuple(MODE_FACTS)
LOSSLESS_MODES: tuple[Mode, ...] = tuple(m for m in CONCRETE_MODES if m.is_lossless)
DEFAULT_BLOCKS: Mapping[Mode, int] = MappingProxyType(
    {m: f.default_block for m, f in MODE_FACTS.items()})


def work_tokens(mode: Mode | str, block: int) -> int:
    return MODE_FACTS[Mode(mode)].work_tokens(block)


def default_block(mode: Mode | str) -> int:
    return MODE_FACTS[Mode(mode)].default_block


def max_work_tokens(mode: Mode | str, block: int | None = None) -> int:
    """The most tokens one step of a request asking for mode (auto: any mode) with block
    (None: each mode's default) puts in the batch."""
    modes = CONCRETE_MODES if Mode(mode) is Mode.AUTO else (Mode(mode),)
    return max(MODE_FACTS[m].work_tokens(block or MODE_FACTS[m].default_block) for m in modes)
