"""What a step hands a draft pool, and what comes back: plan types of pipelined speculation.

With a draft pool (actors/speculation_pools.py), a request's share of a step can be
  - a DraftWork alone (it goes to the draft pool), or
  - a PipelinedWork: a causal verify chunk for the verify pool with, attached, the DraftWork
    of the next block (drafted while this one is verified).
The executor answers a PipelinedResult: the verify result (if any) and the draft's result,
or `draft_failed` when the draft pool lost the work (the request then goes on without it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

from engine.plan import ChunkWork, WorkResult


@dataclass
class DraftWork(ChunkWork):
    """A chunk for draft pool `replica`; its slots and block table are that pool's cache."""

    replica: int = 0


@dataclass
class PipelinedWork(ChunkWork):
    """A verify chunk (verify pool) and the next block's draft (draft pool), or no draft."""

    draft: DraftWork | None = None

    @staticmethod
    def of(work: ChunkWork, draft: DraftWork | None) -> PipelinedWork:
        return PipelinedWork(**{f.name: getattr(work, f.name) for f in fields(ChunkWork)},
                             draft=draft)


@dataclass
class PipelinedResult(WorkResult):
    draft: WorkResult | None = None  # the draft pool's result of the attached / lone draft
    draft_failed: bool = False  # the draft pool died or stalled on this work

    @staticmethod
    def of(result: WorkResult | None, draft: WorkResult | None, failed: bool
           ) -> PipelinedResult:
        base = result or WorkResult(tokens=[], probs=[])
        return PipelinedResult(base.tokens, base.probs, base.accepted, base.scores,
                               draft=draft, draft_failed=failed)


class DraftPoolView(Protocol):
    """What the pipelined mode needs to know of the draft pools (the executor answers)."""

    @property
    def num_draft_replicas(self) -> int: ...

    def is_draft_ready(self, replica: int) -> bool:
        """Up and not being rebuilt."""

    def draft_generation(self, replica: int) -> int:
        """Bumped each time the replica loses its cache (its actors died)."""
