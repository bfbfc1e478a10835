"""Fused q/k/v and gate/up projections (models/fuse.py) give the unfused model's logits, at
tp=1 and with each of tp=2 ranks fusing its own slices; a fused model runs one GEMM per
group (counted), and biases travel with their rows."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from models.batch import ChunkBatch
from models.checkpoint import DEFAULT_MODEL_DIR, load_checkpoint
from models.fuse import FusedLinear, checkpoint_shapes, fuse_projections, is_fused
from models.transformer import TriModeLM
from tests.models.test_tensor_parallel import (
    GQA_8_2,
    ThreadTP,
    _Hub,
    check_chunks,
    random_checkpoint,
)


@pytest.fixture(scope="module")
def gqa_dir(tmp_path_factory: pytest.TempPathFactory):
    return random_checkpoint(tmp_path_factory.mktemp("gqa-fuse"), GQA_8_2)


def _logits(model, chunks) -> torch.Tensor:  # noqa: ANN001
    with torch.inference_mode():
        return model(ChunkBatch.from_chunks(chunks)).logits


@pytest.mark.parametrize("which", ["default", "gqa"])
def test_fused_equals_unfused_tp1(which: str, gqa_dir) -> None:
    path = DEFAULT_MODEL_DIR if which == "default" else gqa_dir
    model = load_checkpoint(path)
    chunks = check_chunks(model.config)
    ref = _logits(model, chunks)
    num_params = sum(p.numel() for p in model.parameters())
    fuse_projections(model)
    assert is_fused(model)
    assert not hasattr(model.model.layers[0].self_attn, "q_proj")  # the parts are gone
    assert sum(p.numel() for p in model.parameters()) == num_params  # nothing duplicated
    got = _logits(model, chunks)
    assert ref.abs().max() > 1.0
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), (got - ref).abs().max().item()
    fuse_projections(model)  # idempotent
    assert torch.equal(_logits(model, chunks), got)


def test_fused_equals_unfused_tp2(gqa_dir) -> None:
    """Each rank loads its slices, then fuses them: [q_r; k_r; v_r] and [gate_r; up_r]."""
    full = load_checkpoint(gqa_dir)
    chunks = check_chunks(full.config)
    ref = _logits(full, chunks)
    hub = _Hub(2)
    models = [fuse_projections(load_checkpoint(gqa_dir, tp=ThreadTP(r, 2, hub=hub)))
              for r in range(2)]
    attn = models[1].model.layers[0].self_attn
    assert attn.qkv_proj.sizes == [4 * 16, 16, 16]  # 4 of 8 q heads, 1 of 2 kv heads
    shapes = checkpoint_shapes(models[1])  # what shard_worker counts as this rank's share
    assert shapes["model.layers.0.self_attn.k_proj.weight"][0] == (16, GQA_8_2.hidden_size)
    assert shapes["model.layers.0.mlp.up_proj.weight"][0] == (128, GQA_8_2.hidden_size)
    assert set(shapes) == {n for n, _ in full.named_parameters()}
    out: list[torch.Tensor | None] = [None, None]

    def run(rank: int) -> None:
        out[rank] = _logits(models[rank], chunks)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert out[0] is not None and out[1] is not None
    torch.testing.assert_close(out[0], ref, msg=lambda m: f"tp=2 fused: {m}")  # fp32 defaults


def test_fused_equals_unfused_with_qkv_biases() -> None:
    """Qwen2-style q/k/v biases travel into the fused GEMM (in memory: tandem's own save
    writes no biases)."""
    model = TriModeLM(GQA_8_2.replace(qkv_bias=True))
    model.init_weights(seed=3, std=0.1)
    with torch.no_grad():  # init_weights may zero biases: make them count
        for layer in model.model.layers:
            layer.self_attn.k_proj.bias.normal_(0, 0.5)
    chunks = check_chunks(model.config)
    ref = _logits(model, chunks)
    fuse_projections(model)
    assert model.model.layers[0].self_attn.qkv_proj.bias is not None
    assert torch.allclose(_logits(model, chunks), ref, atol=1e-5, rtol=0)


def test_one_gemm_per_group(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fuse_projections(load_checkpoint())
    calls = []
    real = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear",
                        lambda x, w, b=None: calls.append(tuple(w.shape)) or real(x, w, b))
    _logits(model, check_chunks(model.config))
    c = model.config
    qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
    assert calls.count((qkv, c.hidden_size)) == c.num_layers
    assert calls.count((2 * c.intermediate_size, c.hidden_size)) == c.num_layers
    assert len(calls) == 4 * c.num_layers + 1  # qkv, o, gate_up, down per layer; LM head


def test_biases_follow_their_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    parts = [nn.Linear(8, n, bias=b) for n, b in ((6, True), (4, False), (4, True))]
    for p in parts:
        with torch.no_grad():
            p.weight.copy_(torch.randn(p.weight.shape, generator=gen))
            if p.bias is not None:
                p.bias.copy_(torch.randn(p.bias.shape, generator=gen))
    x = torch.randn(5, 8, generator=gen)
    fused = FusedLinear(parts)
    for got, part in zip(fused(x), parts, strict=True):
        assert torch.allclose(got, part(x), atol=1e-6)
    holder = nn.Module()
    holder.qkv = FusedLinear(parts, ["a", "b", "c"])
    shapes = checkpoint_shapes(holder)  # b had no bias: none is reported for it
    assert set(shapes) == {"a.weight", "b.weight", "c.weight", "a.bias", "c.bias"}
    assert shapes["c.bias"][0] == (4,)
    with pytest.raises(ValueError, match="in_features"):
        FusedLinear([nn.Linear(8, 4), nn.Linear(6, 4)])
