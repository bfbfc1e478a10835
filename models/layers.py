"""Linear layers that know their tensor-parallel slice of a checkpoint tensor.

Each parameter carries `shard = (dim, start, size)`: the slice of the full checkpoint tensor
this rank holds. The checkpoint loader reads exactly that slice, nothing more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.parallel import SINGLE, TensorParallel


def _mark(param: nn.Parameter, dim: int | None, start: int = 0, size: int = 0) -> nn.Parameter:
    param.shard = None if dim is None else (dim, start, size)  # type: ignore[attr-defined]
    return param


class ColumnParallelLinear(nn.Module):
    """y = x W^T for rows [start, start + size) of W: each rank computes its output columns."""

    def __init__(self, in_features: int, out_features: int, start: int = 0,
                 size: int | None = None) -> None:
        super().__init__()
        size = out_features if size is None else size
        self.weight = _mark(nn.Parameter(torch.empty(size, in_features)),
                            None if size == out_features else 0, start, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class RowParallelLinear(nn.Module):
    """y = all_reduce(x_r W_r^T): each rank holds input columns [start, start + size) of W."""

    def __init__(self, in_features: int, out_features: int, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        start, size = tp.split(in_features, "row-parallel in_features")
        self.tp = tp
        self.weight = _mark(nn.Parameter(torch.empty(out_features, size)),
                            None if tp.world_size == 1 else 1, start, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tp.all_reduce(F.linear(x, self.weight))


class RMSNormWeight(nn.Module):
    """Holds the norm's weight under the Hugging Face name; the math is kernels.rmsnorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = _mark(nn.Parameter(torch.ones(dim)), None)
