"""AR logits against transformers' own Mistral implementation: a reference nobody here wrote."""

from __future__ import annotations

import pytest
import torch

from models.batch import Chunk, ChunkBatch
from models.checkpoint import load_checkpoint, save_checkpoint

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    config = transformers.MistralConfig(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0,
        max_position_embeddings=256, sliding_window=None, tie_word_embeddings=False)
    model = transformers.MistralForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("hf-mistral")
    model.save_pretrained(path)
    return model, path


def test_causal_logits_match_transformers_on_a_ragged_batch(hf_dir) -> None:
    hf, path = hf_dir
    ours = load_checkpoint(path)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 101, (n,), generator=gen) for n in (7, 1, 33, 12)]
    batch = ChunkBatch.from_chunks([Chunk.causal(p.tolist()) for p in prompts])
    with torch.no_grad():
        logits = ours(batch).logits
        start = 0
        for p in prompts:
            ref = hf(p[None]).logits[0]
            diff = (logits[start:start + len(p)] - ref).abs().max().item()
            assert diff <= 1e-4, f"prompt of {len(p)} tokens: max |diff| {diff}"
            start += len(p)


def test_decode_with_cache_matches_full_forward(hf_dir) -> None:
    """Prefill into a paged cache, then decode one token at a time: same logits as AR over
    the whole sequence (the cache path and the no-cache path agree)."""
    _, path = hf_dir
    model = load_checkpoint(path)
    tokens = torch.randint(0, 101, (21,), generator=torch.Generator().manual_seed(2)).tolist()
    bs, kvh, hd = 4, 2, 16
    caches = [(torch.randn(8, bs, kvh, hd), torch.randn(8, bs, kvh, hd)) for _ in range(2)]
    table = [5, 2, 7, 0, 3, 1]  # scattered blocks: holes and out-of-order ids
    with torch.no_grad():
        full = model(ChunkBatch.from_chunks([Chunk.causal(tokens)])).logits
        prefill = 13
        out = model(ChunkBatch.from_chunks([Chunk.causal(tokens[:prefill], 0, 0, table)]), caches)
        _store(caches, out, table, bs, 0, prefill)
        for pos in range(prefill, len(tokens)):
            chunk = Chunk.causal([tokens[pos]], pos, pos, table)
            out = model(ChunkBatch.from_chunks([chunk]), caches)
            _store(caches, out, table, bs, pos, 1)
            assert (out.logits[0] - full[pos]).abs().max().item() <= 1e-4


def _store(caches, out, table, bs, start, n) -> None:  # noqa: ANN001
    slots = [table[p // bs] * bs + p % bs for p in range(start, start + n)]
    for layer, (k, v) in enumerate(caches):
        k.view(-1, *k.shape[2:])[slots] = out.new_k[layer]
        v.view(-1, *v.shape[2:])[slots] = out.new_v[layer]


def test_save_load_round_trip_reproduces_logits_exactly(tiny_model, tmp_path) -> None:
    save_checkpoint(tiny_model, tmp_path)
    again = load_checkpoint(tmp_path)
    batch = ChunkBatch.from_chunks([Chunk.causal([5, 9, 100, 7, 42]),
                                    Chunk.bidirectional([11, 3, 3, 3], start=2)])
    with torch.no_grad():
        assert torch.equal(tiny_model(batch).logits, again(batch).logits)
