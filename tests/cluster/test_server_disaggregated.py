"""ray_configs/disaggregated.yaml for real: one replica driving a verify pool (tp=2, in the
replica's placement group) and a bfloat16 draft pool (tp=1, its own placement group).
spec_pipelined and auto completions equal AR's greedy text."""

from __future__ import annotations

import httpx
import openai
import pytest

from cluster.config import load_config
from engine.engine import LLMEngine
from engine.executor import ModelExecutor
from engine.params import DecodeParams, Mode, SamplingParams
from tests.cluster.conftest import running_app, yaml_app

pytestmark = pytest.mark.slow

PROMPT = "def parse_args("


@pytest.fixture(scope="module")
def base_url(ray_session) -> str:
    app = yaml_app("disaggregated.yaml")
    with running_app(load_config(app["args"]), app["name"]) as url:
        yield url


def test_pipelined_completions_equal_ar(base_url: str, tiny_model, codec) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0,
                           timeout=120)
    engine = LLMEngine(ModelExecutor(tiny_model, 64, 16), tiny_model.config, codec)
    want = engine.generate([PROMPT], SamplingParams(max_tokens=12, temperature=0),
                           DecodeParams(mode=Mode.AR))[0].text
    for mode in ("spec_pipelined", "auto", "ar"):
        r = client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=12,
                                      temperature=0, extra_body={"mode": mode})
        assert r.choices[0].text == want, mode
    stream = client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=12,
                                       temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == want
    health = httpx.get(f"{base_url}/health").json()
    assert health["kv_free_blocks"] == health["kv_blocks"]


def test_each_pool_is_packed_in_its_own_placement_group(base_url: str, ray_session) -> None:
    config = load_config(yaml_app("disaggregated.yaml")["args"])
    groups = [(list(g["bundles"].values()), g["strategy"])
              for g in ray_session.util.placement_group_table().values()
              if g["state"] == "CREATED"]
    assert (config.placement_bundles(), "STRICT_PACK") in groups, groups
    for bundles in config.draft_bundles():
        assert (bundles, "STRICT_PACK") in groups, groups
