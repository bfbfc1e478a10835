"""A broken checkpoint directory gives an error naming the file and the field."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from models.checkpoint import DEFAULT_MODEL_DIR, load_checkpoint
from models.config import ModelConfig
from models.errors import CheckpointError
from models.tokenizer import TextCodec


@pytest.fixture()
def copy_dir(tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(DEFAULT_MODEL_DIR / name, tmp_path / name)
    return tmp_path


def test_missing_directory(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_missing_weights_file(copy_dir) -> None:
    (copy_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: file not found"):
        load_checkpoint(copy_dir)


def test_missing_config_field(copy_dir) -> None:
    raw = json.loads((copy_dir / "config.json").read_text())
    del raw["hidden_size"]
    (copy_dir / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="config.json: missing field 'hidden_size'"):
        load_checkpoint(copy_dir)


def test_config_disagrees_with_weights(copy_dir) -> None:
    raw = json.loads((copy_dir / "config.json").read_text())
    raw["intermediate_size"] = 1024
    (copy_dir / "config.json").write_text(json.dumps(raw))
    pattern = r"mlp\.\w+_proj\.weight. has shape .* config.json implies"
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(copy_dir)


def test_missing_tensor_is_named(copy_dir) -> None:
    tensors = load_file(copy_dir / "model.safetensors")
    del tensors["model.layers.3.mlp.up_proj.weight"]
    save_file(tensors, copy_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.layers.3.mlp.up_proj.weight' is missing"):
        load_checkpoint(copy_dir)


def test_corrupt_weights_and_tokenizer(copy_dir) -> None:
    (copy_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable"):
        load_checkpoint(copy_dir)
    (copy_dir / "tokenizer.json").write_text("{")
    with pytest.raises(CheckpointError, match="tokenizer.json: cannot be read"):
        TextCodec.load(copy_dir)


def test_config_reads_transformers_5_rope_parameters() -> None:
    raw = ModelConfig.from_json(DEFAULT_MODEL_DIR / "config.json").to_hf_dict()
    raw.pop("rope_theta")
    raw["rope_parameters"] = {"rope_theta": 500000.0, "rope_type": "default"}
    assert ModelConfig.from_hf_dict(raw).rope_theta == 500000.0


def test_config_checks_itself() -> None:
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=3, num_kv_heads=2,
                    head_dim=4, intermediate_size=8)
