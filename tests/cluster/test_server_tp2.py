"""ray_configs/tp2.yaml for real: one replica driving two gloo shard ranks placed in the
replica's own placement group (bundles derived from tp). Greedy output equals tp = 1."""

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
    app = yaml_app("tp2.yaml")
    with running_app(load_config(app["args"]), app["name"]) as url:
        yield url


def test_tp2_greedy_completion_equals_tp1(base_url: str, tiny_model, codec) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0,
                           timeout=120)
    engine = LLMEngine(ModelExecutor(tiny_model, 64, 16), tiny_model.config, codec)
    sp = SamplingParams(max_tokens=12, temperature=0)
    want = engine.generate([PROMPT], sp, DecodeParams(mode=Mode.AR))[0].text
    for mode in ("ar", "spec_quadratic"):
        r = client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=12,
                                      temperature=0, extra_body={"mode": mode})
        assert r.choices[0].text == want, mode
    stream = client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=12,
                                       temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == want
    health = httpx.get(f"{base_url}/health").json()
    assert health["kv_free_blocks"] == health["kv_blocks"]


def test_the_replica_reserved_its_bundles_from_tp(base_url: str, ray_session) -> None:
    groups = [g for g in ray_session.util.placement_group_table().values()
              if g["state"] == "CREATED"]
    want = load_config(yaml_app("tp2.yaml")["args"]).placement_bundles()
    assert any(list(g["bundles"].values()) == want and g["strategy"] == "STRICT_PACK"
               for g in groups), groups
