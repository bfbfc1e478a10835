"""Checkpoints written by transformers (tests/models/hf_builders.py) load as they are: AR
greedy equals transformers' generate, both speculative modes equal AR, the chat prompt equals
apply_chat_template's, and TP=2 logits equal TP=1's, for Llama-3-style, Mistral and Qwen2."""

from __future__ import annotations

import pytest
import torch

from engine.engine import EngineConfig, LLMEngine
from engine.params import DecodeParams, Mode, SamplingParams
from models.batch import Chunk, ChunkBatch
from models.chat_template import ChatTemplate
from models.checkpoint import load_checkpoint
from models.rope_scaling import parse_rope, rope_frequencies
from models.tokenizer import TextCodec
from tests.models.test_tensor_parallel import ThreadTP, _Hub

transformers = pytest.importorskip("transformers")
from tests.models.hf_builders import BUILDERS  # noqa: E402

PROMPTS = ["the quick brown fox", "def parse(args):", "hello"]
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello world, a tiny model"}]
NUM_NEW = 14


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def ckpt(request, tmp_path_factory: pytest.TempPathFactory):
    """(name, path, transformers model in fp32, transformers tokenizer), built once."""
    name = request.param
    path = BUILDERS[name](tmp_path_factory.mktemp(name))
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    return name, path, hf, tok


def engine_of(path) -> LLMEngine:  # noqa: ANN001
    return LLMEngine.from_checkpoint(path, EngineConfig(num_blocks=64, block_size=8))


def hf_greedy(hf, ids: list[int]) -> list[int]:  # noqa: ANN001
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=NUM_NEW, do_sample=False,
                          attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return out[0, len(ids):].tolist()


def test_prompts_encode_as_transformers_does(ckpt) -> None:
    name, path, _, tok = ckpt
    codec = TextCodec.load(path)
    for prompt in PROMPTS:
        assert codec.encode(prompt) == tok(prompt)["input_ids"]
    if name == "llama3":  # the post-processor's BOS
        assert codec.encode("hello")[0] == tok.bos_token_id == codec.bos_id
    assert set(codec.special.eos_ids) >= set(
        [hf_eos] if isinstance(hf_eos := ckpt[2].generation_config.eos_token_id, int)
        else hf_eos)
    assert codec.mask_id is not None and codec.decode([codec.mask_id]) == ""


def test_ar_greedy_equals_transformers_generate(ckpt) -> None:
    _, path, hf, tok = ckpt
    engine = engine_of(path)
    for prompt in PROMPTS:
        ids = tok(prompt)["input_ids"]
        ours = engine.generate([prompt], SamplingParams(max_tokens=NUM_NEW))[0].token_ids
        assert ours == hf_greedy(hf, ids), prompt


@pytest.mark.parametrize("mode", [Mode.SPEC_LINEAR, Mode.SPEC_QUADRATIC])
def test_speculative_modes_equal_ar(ckpt, mode: Mode) -> None:
    engine = engine_of(ckpt[1])
    sp = SamplingParams(max_tokens=NUM_NEW, ignore_eos=True)
    ar = engine.generate(PROMPTS, sp, DecodeParams(mode=Mode.AR))
    spec = engine.generate(PROMPTS, sp, DecodeParams(mode=mode, block_length=4))
    assert [o.token_ids for o in spec] == [o.token_ids for o in ar]


def test_chat_prompt_equals_apply_chat_template(ckpt) -> None:
    _, path, hf, tok = ckpt
    text = ChatTemplate.load(path).render(MESSAGES)
    assert text == tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    want = tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)
    want = want["input_ids"] if hasattr(want, "keys") else want
    engine = engine_of(path)
    assert engine.tokenize(text, add_special_tokens=False) == list(want)
    out = engine.generate([engine.tokenize(text, False)], SamplingParams(max_tokens=NUM_NEW))[0]
    assert out.token_ids == hf_greedy(hf, list(want))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 0.1)])
def test_tp2_logits_equal_tp1(ckpt, dtype: torch.dtype, tol: float) -> None:
    path = ckpt[1]
    full = load_checkpoint(path, dtype=dtype)
    ids = torch.randint(0, full.config.vocab_size, (11,),
                        generator=torch.Generator().manual_seed(0)).tolist()
    mask = TextCodec.load(path).mask_id
    batch = ChunkBatch.from_chunks([Chunk.causal(ids), Chunk.bidirectional([ids[-1]] + [mask] * 3,
                                                                           start=11)])
    with torch.inference_mode():
        ref = full(batch).logits
    hub = _Hub(2)
    ranks = [load_checkpoint(path, tp=ThreadTP(r, 2, hub=hub), dtype=dtype) for r in range(2)]
    out: list[torch.Tensor | None] = [None, None]

    def run(r: int) -> None:
        with torch.inference_mode():
            out[r] = ranks[r](batch).logits

    import threading
    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert out[0] is not None and out[0].dtype == dtype
    assert (out[0].float() - ref.float()).abs().max().item() <= tol


@pytest.mark.parametrize("scaling", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32,
     "beta_fast": 16, "mscale": 0.9, "mscale_all_dim": 0.7},
])
def test_rope_scaling_equals_transformers(scaling: dict) -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    raw = {"hidden_size": 64, "num_attention_heads": 2, "head_dim": 32,
           "max_position_embeddings": 512, "rope_parameters": {**scaling, "rope_theta": 1e4}}
    config = transformers.LlamaConfig(**raw)
    want, want_factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](config, "cpu")
    theta, parsed = parse_rope(raw, "config.json")
    got, factor = rope_frequencies(32, theta, parsed)
    assert torch.equal(got, want) and factor == pytest.approx(want_factor)


def test_rope_kernel_takes_scaled_frequencies() -> None:
    from kernels.rope_ref import rope_reference
    from kernels.rope_triton import rope_triton

    raw = {"max_position_embeddings": 512, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}
    theta, scaling = parse_rope(raw, "config.json")
    inv_freq, _ = rope_frequencies(16, theta, scaling)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 4, 16, generator=gen), torch.randn(5, 2, 16, generator=gen)
    pos = torch.tensor([0, 3, 40, 200, 511])
    want = rope_reference(q, k, pos, theta, inv_freq)
    got = rope_triton(q, k, pos, theta, inv_freq)
    plain = rope_reference(q, k, pos, theta)
    assert torch.allclose(got[0], want[0], atol=1e-5) and torch.allclose(got[1], want[1],
                                                                           atol=1e-5)
    assert not torch.allclose(plain[0], want[0], atol=1e-3)  # the scaling changed something
