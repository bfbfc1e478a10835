"""Fused projections, built once at load time: q/k/v as one GEMM, gate/up as one.

The checkpoint keeps its separate Hugging Face tensors (and the loader reads them as such,
each rank only its slices); `fuse_projections` then concatenates each rank's own slices, so
the fused weight of rank r is [q_r; k_r; v_r] and the model reads the same at tp=1 and tp=N.
One [T, D] x [D, (H + 2 KVH) hd] GEMM instead of three reads the input once and launches
once; at decode sizes the launches are what three small GEMMs cost.

Inference only: a fused model's state dict no longer has the checkpoint's names, so the
executor fuses its own model and training never does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.transformer import TriModeLM


class FusedLinear(nn.Module):
    """y = x [W_1; W_2; ...]^T (+ b), returned split back into the parts' outputs."""

    def __init__(self, parts: list[nn.Module], names: list[str] | None = None) -> None:
        super().__init__()
        weights = [p.weight for p in parts]
        self.names = names or [f"part{i}" for i in range(len(parts))]  # the parts' names
        if len({(w.shape[1], w.dtype, w.device) for w in weights}) != 1:
            raise ValueError("fused parts must share in_features, dtype and device")
        self.sizes = [w.shape[0] for w in weights]
        with torch.no_grad():
            self.weight = nn.Parameter(torch.cat([w.detach() for w in weights]),
                                       requires_grad=False)
            biases = [getattr(p, "bias", None) for p in parts]
            self.has_bias = [b is not None for b in biases]  # zeros stand in for the others
            bias = None
            if any(b is not None for b in biases):
                bias = nn.Parameter(torch.cat([
                    b.detach() if b is not None else w.new_zeros(w.shape[0])
                    for b, w in zip(biases, weights, strict=True)]), requires_grad=False)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # x: [T, D] -> one [T, sum(sizes)] GEMM -> views [T, size_i]
        return F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1)


def fuse_projections(model: TriModeLM) -> TriModeLM:
    """Replace every layer's q/k/v and gate/up projections by one fused GEMM each, in place.
    Idempotent: an already fused layer is left as it is."""
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if attn.qkv_proj is None:
            attn.qkv_proj = FusedLinear([attn.q_proj, attn.k_proj, attn.v_proj],
                                        ["q_proj", "k_proj", "v_proj"])
            del attn.q_proj, attn.k_proj, attn.v_proj
        if mlp.gate_up_proj is None:
            mlp.gate_up_proj = FusedLinear([mlp.gate_proj, mlp.up_proj], ["gate_proj", "up_proj"])
            del mlp.gate_proj, mlp.up_proj
    return model


def checkpoint_shapes(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """(local shape, dtype) of every parameter under its checkpoint name, fused or not: what
    this rank holds of each checkpoint tensor."""
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    fused = {name: m for name, m in model.named_modules() if isinstance(m, FusedLinear)}
    for name, p in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if owner in fused:
            parent = owner.rpartition(".")[0]
            prefix = f"{parent}." if parent else ""
            m = fused[owner]
            rows = m.sizes
            cols = tuple(p.shape[1:])
            for part, size, biased in zip(m.names, rows, m.has_bias, strict=True):
                if leaf == "weight" or biased:
                    out[f"{prefix}{part}.{leaf}"] = ((size, *cols), p.dtype)
        else:
            out[name] = (tuple(p.shape), p.dtype)
    return out


def is_fused(model: TriModeLM) -> bool:
    return all(layer.self_attn.qkv_proj is not None for layer in model.model.layers)
