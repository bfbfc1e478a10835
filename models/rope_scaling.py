"""RoPE frequency scaling (`rope_scaling` / transformers 5's `rope_parameters`): linear,
llama3 and yarn, computed exactly as transformers' modeling_rope_utils does.

A scaling changes only the inverse frequencies, plus, for yarn, an attention factor that
multiplies cos and sin: both q and k are scaled by it, so the model folds its square into
the attention's softmax scale instead (the scores are the same; the values are untouched).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from models.errors import CheckpointError

SUPPORTED = ("default", "linear", "llama3", "yarn")
_REQUIRED = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
             "yarn": ("factor",)}


def parse_rope(raw: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, scaling or None) from a config.json of either transformers generation."""
    params = raw.get("rope_parameters")
    field = "rope_parameters"
    if not params:
        params, field = raw.get("rope_scaling") or {}, "rope_scaling"
    if not isinstance(params, dict):
        raise CheckpointError(f"{source}: field '{field}' must be an object")
    if params and all(isinstance(v, dict) for v in params.values()):
        raise CheckpointError(f"{source}: field '{field}' is per layer type "
                              f"({', '.join(params)}); tandem supports one RoPE for all layers")
    theta = float(raw.get("rope_theta") or params.get("rope_theta") or 10000.0)
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in SUPPORTED:
        raise CheckpointError(f"{source}: field '{field}' has rope_type {kind!r}; tandem "
                              f"supports {', '.join(SUPPORTED)}")
    if kind == "default":
        return theta, None
    for key in _REQUIRED[kind]:
        if not isinstance(params.get(key), int | float):
            raise CheckpointError(f"{source}: field '{field}.{key}' is missing or not a number "
                                  f"(needed by rope_type {kind!r})")
    scaling = {k: v for k, v in params.items() if k not in ("rope_theta", "type")}
    scaling["rope_type"] = kind
    scaling.setdefault("original_max_position_embeddings",
                       raw.get("original_max_position_embeddings")
                       or raw.get("max_position_embeddings", 2048))
    return theta, scaling


def _base_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).float()
    return 1.0 / (theta ** (exponent / head_dim))


def rope_frequencies(head_dim: int, theta: float, scaling: dict[str, Any]
                     ) -> tuple[torch.Tensor, float]:
    """([head_dim // 2] fp32 inverse frequencies on CPU, attention factor)."""
    kind = scaling["rope_type"]
    if kind == "linear":
        return _base_inv_freq(head_dim, theta) / scaling["factor"], 1.0
    if kind == "llama3":
        return _llama3(head_dim, theta, scaling), 1.0
    if kind == "yarn":
        return _yarn(head_dim, theta, scaling)
    raise ValueError(f"rope_type {kind!r} is not one of {SUPPORTED}")


def _llama3(head_dim: int, theta: float, s: dict[str, Any]) -> torch.Tensor:
    inv_freq = _base_inv_freq(head_dim, theta)
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _yarn(head_dim: int, theta: float, s: dict[str, Any]) -> tuple[torch.Tensor, float]:
    factor, old_len = s["factor"], s["original_max_position_embeddings"]

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = s.get("attention_factor")
    if attention is None:
        m, m_all = s.get("mscale"), s.get("mscale_all_dim")
        attention = (mscale(factor, m) / mscale(factor, m_all)) if m and m_all else mscale(factor)
    beta_fast, beta_slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return head_dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # as transformers: no division by zero
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # the extrapolation share per frequency
    return interpolation * (1 - keep) + extrapolation * keep, float(attention)


class RopeFrequencies:
    """One model's scaled frequencies, built on first use per device (models are built on
    the meta device, so not at construction). Plain RoPE: inv_freq None, factor 1."""

    def __init__(self, head_dim: int, theta: float, scaling: dict[str, Any] | None) -> None:
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        self.attention_factor = 1.0
        if scaling is not None:
            with torch.device("cpu"):
                self._cpu, self.attention_factor = rope_frequencies(head_dim, theta, scaling)
        self._by_device: dict[torch.device, torch.Tensor] = {}

    def inv_freq(self, device: torch.device) -> torch.Tensor | None:
        if self.scaling is None:
            return None
        if device not in self._by_device:
            self._by_device[device] = self._cpu.to(device)
        return self._by_device[device]
