"""What a request asks for: sampling parameters and how to decode. Frozen, self-checking."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from policies.modes import Mode

__all__ = ["DecodeParams", "Mode", "SamplingParams"]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int = field(default_factory=lambda: secrets.randbits(63))
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"temperature must be in [0, 100], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


@dataclass(frozen=True)
class DecodeParams:
    mode: Mode = Mode.AR
    block_length: int | None = None  # None = the mode's default for the model
    threshold: float = 0.9  # diffusion: commit a masked position at this confidence
    revision_threshold: float = 0.0  # diffusion: re-mask a committed token below this (0 = off)
    max_revisions: int = 2  # diffusion: per position, at most this many re-masks
    allow_lossy: bool = False  # auto may choose diffusion

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        if self.block_length is not None and not 2 <= self.block_length <= 64:
            raise ValueError(f"block_length must be in [2, 64], got {self.block_length}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.revision_threshold < 1.0:
            raise ValueError(f"revision_threshold must be in [0, 1), got "
                             f"{self.revision_threshold}")
        if self.max_revisions < 0:
            raise ValueError(f"max_revisions must be >= 0, got {self.max_revisions}")
        if self.mode is Mode.DIFFUSION and not self.allow_lossy:
            object.__setattr__(self, "allow_lossy", True)  # asking for diffusion allows it
