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
                 size: int | None = None, bias: bool = False) -> None:
        super().__init__()
        size = out_features if size is None else size
        dim = None if size == out_features else 0
        self.weight = _mark(nn.Parameter(torch.empty(size, in_features)), dim, start, size)
        # A bias (Qwen2's q/k/v) is sliced like the weight's rows.
        self.bias = _mark(nn.Parameter(torch.empty(size)), dim, start, size) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """y = all_reduce(x_r W_r^T): each rank holds input columns [start, start + size) of W."""

    def __init__(self, in_features: int, out_features: int, tp: TensorParallel = SINGLE,
                 bias: bool = False) -> None:
        super().__init__()
        start, size = tp.split(in_features, "row-parallel in_features")
        self.tp = tp
        self.weight = _mark(nn.Parameter(torch.empty(out_features, size)),
                            None if tp.world_size == 1 else 1, start, size)
        # A bias (Llama's attention_bias on o_proj) is whole on every rank, added once after
        # the all-reduce.
        self.bias = _mark(nn.Parameter(torch.empty(out_features)), None) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tp.all_reduce(F.linear(x, self.weight))
        return y if self.bias is None else y + self.bias


class RMSNormWeight(nn.Module):
    """Holds the norm's weight under the Hugging Face name; the math is kernels.rmsnorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = _mark(nn.Parameter(torch.ones(dim)), None)
