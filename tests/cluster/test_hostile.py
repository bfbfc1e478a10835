"""Hostile input against the real ingress (ray_configs/local.yaml under Serve): the issue's
hand-written bodies, then schemathesis cases generated from the ingress's own OpenAPI
schema. 2xx or a 4xx in OpenAI's error shape naming the field; never a 5xx; the server
fine afterwards. The 1,000+ case run is `python -m bench.hostile` (RELIABILITY.md)."""

from __future__ import annotations

import httpx
import pytest

from bench import hostile
from cluster.config import load_config
from tests.cluster.conftest import running_app, yaml_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url(ray_session) -> str:
    app = yaml_app("local.yaml")
    with running_app(load_config(app["args"]), app["name"]) as url:
        yield url


def test_the_ingress_publishes_its_openapi_schema(base_url: str) -> None:
    schema = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models"} <= set(schema["paths"])
    body = schema["components"]["schemas"]["CompletionRequest"]["properties"]
    assert body["n"]["maximum"] == 16 and "slo" in body


@pytest.mark.parametrize("case", hostile.hostile_cases(), ids=lambda c: c.name)
def test_hand_written_hostile_bodies(base_url: str, case: hostile.Hostile) -> None:
    headers = {"content-type": case.content_type} if case.content_type else {}
    r = httpx.post(base_url + case.path, content=case.body, headers=headers, timeout=120)
    assert hostile.problem(r, case.want, case.param) is None


def test_schemathesis_generated_cases_and_the_server_after(base_url: str) -> None:
    statuses, problems = hostile.fuzz(base_url, max_examples=150, seed=1)
    assert not problems, problems[:5]
    assert sum(statuses.values()) >= 100
    assert len({path for path, _ in statuses}) >= 4  # every operation was reached
    assert hostile.server_fine(base_url) is None
