"""Broken transformers-written checkpoints: each error names the file and the field, and a
checkpoint without a mask token still serves AR."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cluster.config import load_config
from cluster.generate_cmd import main as generate_main
from cluster.job import ChoiceSpec, GenerateJob, JobAccepted, JobError
from cluster.job_builder import BadRequest, chat_job, completion_job
from cluster.model_server import ModelServer
from cluster.openai_protocol import ChatCompletionRequest, CompletionRequest
from engine.engine import EngineConfig, LLMEngine
from engine.params import DecodeParams, Mode, SamplingParams
from models.batch import Chunk, ChunkBatch
from models.checkpoint import load_checkpoint
from models.errors import CheckpointError

pytest.importorskip("transformers")
from tests.models.hf_builders import mistral  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mistral(tmp_path_factory.mktemp("mistral"))


@pytest.fixture()
def ckpt(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "ckpt"))


def edit_json(path: Path, **changes: object) -> None:
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


def server_of(path: Path) -> ModelServer:
    return ModelServer(load_config({"model": {"model_dir": str(path), "num_kv_blocks": 64,
                                              "policy": "first_come"}}))


async def first_item(server: ModelServer, job: GenerateJob) -> object:
    items = [item async for item in server.generate(job)]
    return items[0]


def test_no_mask_token_serves_ar_alone(ckpt: Path, capsys) -> None:  # noqa: ANN001
    edit_json(ckpt / "config.json", mask_token_id=None)
    edit_json(ckpt / "tokenizer_config.json", mask_token=None)
    engine = LLMEngine.from_checkpoint(ckpt, EngineConfig(num_blocks=64, block_size=8))
    assert engine.mask_id is None
    for mode in (Mode.DIFFUSION, Mode.SPEC_LINEAR, Mode.SPEC_QUADRATIC):
        with pytest.raises(ValueError, match=r"^mode: .*needs a mask token.*mask_token_id"):
            engine.add_request("hello", decode=DecodeParams(mode=mode))
    sp = SamplingParams(max_tokens=6, ignore_eos=True)
    auto = engine.generate(["hello"], sp, DecodeParams(mode=Mode.AUTO))[0]
    assert auto.token_ids == engine.generate(["hello"], sp)[0].token_ids
    assert set(auto.modes) <= {"prefill", "ar"}
    # The server: a 400 naming `mode`; the CLI: a message and exit status 2.
    server = server_of(ckpt)
    spec = ChoiceSpec(0, "hello", sp)
    refused = asyncio.run(first_item(server, GenerateJob("j", (spec,), DecodeParams(
        mode=Mode.SPEC_QUADRATIC))))
    assert isinstance(refused, JobError) and (refused.status, refused.param) == (400, "mode")
    accepted = asyncio.run(first_item(server, GenerateJob("k", (spec,), DecodeParams())))
    assert isinstance(accepted, JobAccepted)
    with pytest.raises(SystemExit) as exit_:
        generate_main(["hello", "--model", str(ckpt), "--mode", "diffusion", "--max-tokens", "4"])
    assert exit_.value.code == 2 and "mode: 'diffusion' needs a mask token" in (
        capsys.readouterr().err)


def test_unknown_rope_type_is_named(ckpt: Path) -> None:
    edit_json(ckpt / "config.json", rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                      "rope_theta": 1e4})
    with pytest.raises(CheckpointError, match=r"config.json: field 'rope_parameters' has "
                                              r"rope_type 'dynamic'"):
        load_checkpoint(ckpt)
    edit_json(ckpt / "config.json", rope_parameters=None,
              rope_scaling={"type": "linear"}, rope_theta=1e4)
    with pytest.raises(CheckpointError, match=r"config.json: field 'rope_scaling.factor'"):
        load_checkpoint(ckpt)


def test_unused_tensor_is_named(ckpt: Path) -> None:
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["model.norm.weight"]
    tensors = load_file(ckpt / shard)
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(tensors, ckpt / shard, metadata={"format": "pt"})
    index["weight_map"]["model.layers.0.self_attn.rotary_emb.inv_freq"] = shard
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"{shard}: tensor 'model.layers.0.self_attn."
                                              r"rotary_emb.inv_freq' is not used"):
        load_checkpoint(ckpt)


def test_truncated_safetensors_is_named(ckpt: Path) -> None:
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shard = ckpt / index["weight_map"]["lm_head.weight"]
    data = shard.read_bytes()
    header = 8 + struct.unpack("<Q", data[:8])[0]
    shard.write_bytes(data[: header + (len(data) - header) // 2])
    with pytest.raises(CheckpointError, match=rf"{shard.name}: .*(not a readable|cannot be)"):
        load_checkpoint(ckpt)


def test_sliding_window_is_honoured(base: Path) -> None:
    """Mistral's window of 12 over a 30-token sequence: the logits equal transformers' (which
    applies the window) and differ from full attention's."""
    import transformers

    model = load_checkpoint(base)
    assert model.window == 12
    ids = torch.randint(0, model.config.vocab_size, (30,),
                        generator=torch.Generator().manual_seed(0))
    hf = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    batch = ChunkBatch.from_chunks([Chunk.causal(ids.tolist())])
    with torch.no_grad():
        ours, ref = model(batch).logits, hf(ids[None]).logits[0]
        model.window = None
        full = model(batch).logits
    assert (ours - ref).abs().max().item() <= 1e-4
    assert (full[12:] - ref[12:]).abs().max().item() > 1e-2  # the window matters here
    assert torch.allclose(full[:12], ref[:12], atol=1e-4)  # and not before it


def test_template_errors_are_400s_naming_messages(ckpt: Path) -> None:
    config = load_config({"model": {"model_dir": str(ckpt)}})
    body = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}]})
    (ckpt / "chat_template.jinja").write_text("{{ raise_exception('no chat, sorry') }}")
    with pytest.raises(BadRequest) as err:
        chat_job(body, config, "c1")
    assert (err.value.status, err.value.param) == (400, "messages")
    assert "chat_template.jinja" in err.value.message and "no chat, sorry" in err.value.message
    (ckpt / "chat_template.jinja").unlink()  # no template at all: chat refused, completions run
    other = load_config({"model": {"model_dir": str(ckpt) + "/"}})  # a fresh cache key
    with pytest.raises(BadRequest, match="no chat template") as err:
        chat_job(body, other, "c2")
    assert err.value.param == "messages"
    job = completion_job(CompletionRequest.model_validate({"prompt": "hi"}), other, "c3")
    assert job.add_special_tokens
