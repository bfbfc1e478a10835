"""Which Hugging Face decoder layouts load, and what each one's config.json means for the
layers: Llama, Mistral and Qwen2 share the module names and differ in attention biases and
sliding windows (the tensors themselves are checked against these by the loader)."""

from __future__ import annotations

from typing import Any

from models.errors import CheckpointError

ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                 "Qwen2ForCausalLM": "qwen2"}


def model_type_of(raw: dict[str, Any], source: str) -> str:
    archs = raw.get("architectures") or []
    known = [ARCHITECTURES[a] for a in archs if a in ARCHITECTURES]
    if known:
        return known[0]
    if archs:
        raise CheckpointError(f"{source}: field 'architectures' is {archs}; tandem loads "
                              f"{', '.join(ARCHITECTURES)}")
    model_type = raw.get("model_type")
    if model_type in ARCHITECTURES.values():
        return model_type
    raise CheckpointError(f"{source}: field 'model_type' is {model_type!r} and no known "
                          f"'architectures' is given; tandem loads {', '.join(ARCHITECTURES)}")


def layout_fields(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """ModelConfig fields that depend on the architecture: biases and the sliding window."""
    kind = model_type_of(raw, source)
    if raw.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{source}: field 'hidden_act' is {raw['hidden_act']!r}, "
                              "only 'silu' (SwiGLU) is supported")
    if raw.get("mlp_bias"):
        raise CheckpointError(f"{source}: field 'mlp_bias' is true; tandem's MLP has no biases")
    if kind == "llama":  # attention_bias puts a bias on q, k, v and o
        bias = bool(raw.get("attention_bias", False))
        return {"qkv_bias": bias, "o_bias": bias, "sliding_window": None}
    if kind == "qwen2":  # q, k, v always have biases; o never
        if raw.get("use_sliding_window"):
            raise CheckpointError(f"{source}: field 'use_sliding_window' is true; tandem "
                                  "supports Qwen2 with full attention only")
        return {"qkv_bias": True, "o_bias": False, "sliding_window": None}
    window = raw.get("sliding_window")
    if window is not None and (not isinstance(window, int) or window < 1):
        raise CheckpointError(f"{source}: field 'sliding_window' must be a positive integer "
                              f"or null, got {window!r}")
    return {"qkv_bias": False, "o_bias": False, "sliding_window": window}
