"""The HTTP server on a transformers-written Llama-3-style checkpoint (bf16 weights, BOS
post-processor, its own chat template and eos list): the chat endpoint's prompt tokens and
greedy text equal apply_chat_template + transformers' generate, through the real openai
client; /health shows the KV cache sized from memory."""

from __future__ import annotations

import httpx
import openai
import pytest
import torch

from cluster.config import load_config
from tests.cluster.conftest import running_app

transformers = pytest.importorskip("transformers")
from tests.models.hf_builders import llama3  # noqa: E402

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello world, a tiny model"}]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory):
    return llama3(tmp_path_factory.mktemp("llama3"))


@pytest.fixture(scope="module")
def base_url(ray_session, llama_dir) -> str:
    config = load_config({"model": {"model_dir": str(llama_dir), "served_model_name": "llama3",
                                    "kv_cache_memory_gb": 0.002, "policy": "first_come"}})
    with running_app(config, "llama3") as url:
        yield url


def test_chat_equals_apply_chat_template_and_generate(base_url: str, llama_dir) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(llama_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                          attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    want = tok.decode(out[0, len(ids):], skip_special_tokens=True)
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0,
                           timeout=120)
    r = client.chat.completions.create(model="llama3", messages=MESSAGES, max_tokens=12,
                                       temperature=0)
    assert r.usage.prompt_tokens == len(ids)
    assert r.choices[0].message.content == want
    c = client.completions.create(model="llama3", prompt="hello", max_tokens=4, temperature=0)
    assert c.usage.prompt_tokens == len(tok("hello")["input_ids"])  # BOS included
    health = httpx.get(f"{base_url}/health", timeout=30).json()
    assert health["kv_cache"]["source"] == "kv_cache_memory_gb=0.002"
