"""Hugging Face checkpoint directories: config.json + *.safetensors (+ tokenizer.json).

Loading never unpickles, and each parameter reads only its own tensor-parallel slice
(`safe_open(...).get_slice`), so a rank never holds the whole checkpoint in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from models.config import ModelConfig
from models.errors import CheckpointError
from models.parallel import SINGLE, TensorParallel
from models.transformer import TriModeLM

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "tandem-tiny"


def save_checkpoint(model: TriModeLM, directory: str | Path,
                    dtype: torch.dtype = torch.float32) -> None:
    """Write config.json and model.safetensors (weights cast to dtype)."""
    if model.tp.world_size != 1:
        raise ValueError("save_checkpoint expects an unsharded (tp=1) model")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype_name = str(dtype).removeprefix("torch.")
    model.config.to_json(directory / "config.json", dtype_name)
    tensors = {name: p.detach().to(dtype).cpu().contiguous()
               for name, p in model.named_parameters()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _tensor_files(directory: Path) -> dict[str, Path]:
    """Map each tensor name to the safetensors file holding it."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: missing field 'weight_map'")
        return {name: directory / fname for name, fname in weight_map.items()}
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory / 'model.safetensors'}: file not found")
    names: dict[str, Path] = {}
    for path in files:
        with _open(path) as f:
            names.update(dict.fromkeys(f.keys(), path))
    return names


def _open(path: Path):
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None


def load_checkpoint(directory: str | Path = DEFAULT_MODEL_DIR, tp: TensorParallel = SINGLE,
                    dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> TriModeLM:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    config = ModelConfig.from_json(directory / "config.json")
    with torch.device("meta"):
        model = TriModeLM(config, tp)
    files = _tensor_files(directory)
    expected = dict(model.named_parameters())
    missing = sorted(set(expected) - set(files))
    if missing:
        raise CheckpointError(f"{directory}: tensor '{missing[0]}' is missing "
                              f"({len(missing)} missing in all)")
    unused = sorted(set(files) - set(expected))
    if unused:
        raise CheckpointError(f"{files[unused[0]]}: tensor '{unused[0]}' is not used by the "
                              f"model config.json describes ({len(unused)} unused in all)")
    state: dict[str, torch.Tensor] = {}
    for path in sorted(set(files.values())):
        with _open(path) as f:
            names = set(f.keys())
            for name in sorted(n for n, p in files.items() if p == path):
                if name not in names:
                    raise CheckpointError(f"{path}: tensor '{name}' is missing (the index "
                                          "model.safetensors.index.json puts it here)")
                state[name] = _read_tensor(f, name, expected[name], path)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True,
                          strict=not config.tie_word_embeddings)
    model.tie_weights()  # assign=True replaced the embedding the head shared
    return model.to(device).eval()


def _read_tensor(f, name: str, param: torch.nn.Parameter, path: Path) -> torch.Tensor:
    try:
        return _read_slice(f, name, param, path)
    except SafetensorError as err:  # e.g. a file cut short
        raise CheckpointError(f"{path}: tensor '{name}' cannot be read ({err})") from None


def _read_slice(f, name: str, param: torch.nn.Parameter, path: Path) -> torch.Tensor:
    """Read the part of tensor `name` this rank holds, checking it against config.json."""
    sl = f.get_slice(name)
    full = list(sl.get_shape())
    shard = getattr(param, "shard", None)
    want = list(param.shape)
    if shard is not None:
        dim, start, size = shard
        want_full = want.copy()
        want_full[dim] = full[dim] if len(full) == len(want) else -1
        if full != want_full or start + size > full[dim]:
            raise _shape_error(path, name, full, want, shard)
        tensor = sl[start:start + size] if dim == 0 else sl[:, start:start + size]
    else:
        if full != want:
            raise _shape_error(path, name, full, want, None)
        tensor = sl[:]
    return tensor


def _shape_error(path: Path, name: str, got: list[int], want: list[int],
                 shard: tuple[int, int, int] | None) -> CheckpointError:
    note = f" (this rank's slice {shard})" if shard else ""
    return CheckpointError(f"{path}: tensor '{name}' has shape {got}, config.json implies "
                           f"{want}{note}")
