"""The tri-mode model's configuration, read from and written to a Hugging Face config.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.errors import CheckpointError


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
    mask_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 3
    block_length: int = 8

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
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)} is outside the "
                                 f"vocabulary of {self.vocab_size}")

    @property
    def num_queries_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    def num_parameters(self) -> int:
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        per_layer = d * (q + 2 * kv) + q * d + 3 * d * f + 2 * d
        return 2 * v * d + self.num_layers * per_layer + d

    # --- Hugging Face config.json -------------------------------------------------------

    def to_hf_dict(self, dtype: str = "float32") -> dict[str, Any]:
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
            "sliding_window": None,
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

        if raw.get("tie_word_embeddings"):
            raise CheckpointError(f"{source}: field 'tie_word_embeddings' is true; tandem "
                                  "expects an untied LM head")
        if raw.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"{source}: field 'hidden_act' is {raw['hidden_act']!r}, "
                                  "only 'silu' (SwiGLU) is supported")
        heads = need("num_attention_heads")
        hidden = need("hidden_size")
        # transformers 5 writes rope_theta inside rope_parameters; older versions at top level.
        rope = raw.get("rope_parameters") or {}
        theta = raw.get("rope_theta", rope.get("rope_theta", 10000.0))
        vocab = need("vocab_size")
        eos = raw.get("eos_token_id", 2)
        eos = eos[0] if isinstance(eos, list) else eos
        try:
            return cls(
                vocab_size=vocab,
                hidden_size=hidden,
                num_layers=need("num_hidden_layers"),
                num_heads=heads,
                num_kv_heads=raw.get("num_key_value_heads") or heads,
                head_dim=raw.get("head_dim") or hidden // heads,
                intermediate_size=need("intermediate_size"),
                rope_theta=float(theta),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
                max_position_embeddings=raw.get("max_position_embeddings", 2048),
                # A plain Mistral checkpoint has no mask token: use the last id until mapped.
                mask_token_id=raw.get("mask_token_id", vocab - 1),
                bos_token_id=_or(raw.get("bos_token_id"), 1),
                eos_token_id=_or(eos, 2),
                pad_token_id=_or(raw.get("pad_token_id"), 0),
                block_length=raw.get("block_length", 8),
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


def _or(value: Any, default: int) -> int:
    return default if value is None else int(value)
