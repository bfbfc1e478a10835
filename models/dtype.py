"""The dtype a model is served in: `auto` is the checkpoint's own (config.json `torch_dtype`,
or transformers 5's `dtype`) on CUDA and float32 on CPU, where the kernels are the torch
references and bf16 matmuls are slow; or a name given explicitly."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.errors import CheckpointError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHOICES = ("auto", *DTYPES)


def resolve_dtype(name: str, model_dir: str | Path, device: str) -> str:
    """The concrete dtype name for `name` (auto, bfloat16, float16, float32)."""
    if name not in CHOICES:
        raise ValueError(f"dtype: {name!r} is not one of {', '.join(CHOICES)}")
    if name != "auto":
        return name
    if not str(device).startswith("cuda"):
        return "float32"
    path = Path(model_dir) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot be read ({err})") from None
    own = raw.get("torch_dtype") or raw.get("dtype") or "float32"
    if own not in DTYPES:
        raise CheckpointError(f"{path}: field 'torch_dtype' is {own!r}; tandem serves "
                              f"{', '.join(DTYPES)}")
    return own
