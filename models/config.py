"""The tri-mode model's configuration, read from and written to a Hugging Face config.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.architectures import layout_fields
from models.errors import CheckpointError
from models.rope_scaling import parse_rope


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 2048
    # None when config.json has none (models/special_tokens.py also reads the tokenizer's).
    mask_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = 3
    block_length: int = 8
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2; Llama's attention_bias (with o_bias)
    o_bias: bool = False
    rope_scaling: dict[str, Any] | None = None  # models/rope_scaling.py; None = plain RoPE
    sliding_window: int | None = None  # Mistral: keys within this many positions only

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "intermediate_size", "max_position_embeddings", "block_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of "
                             f"num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        for name in ("mask_token_id", "bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)} is outside the "
                                 f"vocabulary of {self.vocab_size}")

    @property
    def num_queries_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    def num_parameters(self) -> int:
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        per_layer = d * (q + 2 * kv) + q * d + 3 * d * f + 2 * d
        per_layer += (q + 2 * kv) * self.qkv_bias + d * self.o_bias
        return (1 + (not self.tie_word_embeddings)) * v * d + self.num_layers * per_layer + d

    # --- Hugging Face config.json -------------------------------------------------------

    def to_hf_dict(self, dtype: str = "float32") -> dict[str, Any]:
        if self.qkv_bias or self.o_bias or self.rope_scaling or self.tie_word_embeddings:
            raise ValueError("to_hf_dict writes tandem's own (Mistral) layout: no biases, "
                             "rope scaling or tied embeddings")
        return {
            "architectures": ["MistralForCausalLM"],
            "model_type": "mistral",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": False,
            "sliding_window": self.sliding_window,
            "mask_token_id": self.mask_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "block_length": self.block_length,
            "torch_dtype": dtype,
        }

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
        def need(key: str) -> Any:
            if key not in raw:
                raise CheckpointError(f"{source}: missing field '{key}'")
            return raw[key]

        heads = need("num_attention_heads")
        hidden = need("hidden_size")
        vocab = need("vocab_size")
        theta, scaling = parse_rope(raw, source)
        layout = layout_fields(raw, source)
        eos = raw.get("eos_token_id")
        eos = (eos[0] if eos else None) if isinstance(eos, list) else eos
        try:
            return cls(
                vocab_size=vocab,
                hidden_size=hidden,
                num_layers=need("num_hidden_layers"),
                num_heads=heads,
                num_kv_heads=raw.get("num_key_value_heads") or heads,
                head_dim=raw.get("head_dim") or hidden // heads,
                intermediate_size=need("intermediate_size"),
                rope_theta=theta,
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
                max_position_embeddings=raw.get("max_position_embeddings", 2048),
                mask_token_id=raw.get("mask_token_id"),
                bos_token_id=_first(raw.get("bos_token_id")),
                eos_token_id=eos,
                pad_token_id=_first(raw.get("pad_token_id")),
                block_length=raw.get("block_length", 8),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                rope_scaling=scaling,
                **layout,
            )
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: {err}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: file not found")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: not valid JSON ({err})") from None
        return cls.from_hf_dict(raw, source=str(path))

    def to_json(self, path: str | Path, dtype: str = "float32") -> None:
        Path(path).write_text(json.dumps(self.to_hf_dict(dtype), indent=2) + "\n")

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig(**{**asdict(self), **changes})


def _first(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else int(value)
