"""What a checkpoint allows a request: its context length and its decoding modes."""

from __future__ import annotations

from dataclasses import replace

from engine.params import DecodeParams, Mode
from models.config import ModelConfig


def context_limit(model: ModelConfig, requested: int | None) -> tuple[int, str]:
    """(tokens of context, what sets it) for max_model_len `requested` (None = the model's)."""
    limit, why = model.max_position_embeddings, "config.json max_position_embeddings"
    if requested is None:
        return limit, why
    if requested > limit:
        raise ValueError(f"max_model_len: {requested} exceeds the model's {why} of {limit}")
    return requested, "max_model_len"


def decode_for_checkpoint(decode: DecodeParams, mask_id: int | None) -> DecodeParams:
    """Every mode but AR writes mask tokens: without one, `auto` means AR and the others are
    refused (a 400 naming `mode` at the server)."""
    if mask_id is not None or decode.mode is Mode.AR:
        return decode
    if decode.mode is Mode.AUTO:
        return replace(decode, mode=Mode.AR, block_length=None)
    raise ValueError(f"mode: {decode.mode.value!r} needs a mask token, and this checkpoint "
                     "has none (config.json mask_token_id, tokenizer_config.json mask_token); "
                     "it serves 'ar' only")
