"""Tensor parallelism: which rank this is and the one all-reduce the layers need.

All collectives go through this module so that the model reads the same at tp=1 and tp=N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TensorParallel:
    rank: int = 0
    world_size: int = 1
    group: Any = None  # a torch.distributed process group, or None for the default one

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world of {self.world_size}")

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum x over ranks in place (row-parallel outputs); a no-op at tp=1."""
        if self.world_size > 1:
            dist.all_reduce(x, group=self.group)
        return x

    def split(self, total: int, what: str) -> tuple[int, int]:
        """(start, size) of this rank's even share of `total` rows or columns."""
        if total % self.world_size:
            raise ValueError(f"{what}={total} is not divisible by tp={self.world_size}")
        size = total // self.world_size
        return self.rank * size, size


SINGLE = TensorParallel()
