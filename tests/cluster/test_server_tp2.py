"""ray_configs/tp2.yaml for real: one replica driving two gloo shard ranks placed in the
replica's own placement group (bundles derived from tp). Greedy output equals tp = 1."""

from __future__ import annotations

import pytest

from cluster.config import load_config
from tests.cluster.conftest import assert_serves_ar_text, running_app, yaml_app

pytestmark = pytest.mark.slow

PROMPT = "def parse_args("


@pytest.fixture(scope="module")
def base_url(ray_session) -> str:
    app = yaml_app("tp2.yaml")
    with running_app(load_config(app["args"]), app["name"]) as url:
        yield url


def test_tp2_greedy_completion_equals_tp1(base_url: str, tiny_model, codec) -> None:
    assert_serves_ar_text(base_url, tiny_model, codec, PROMPT, ("ar", "spec_quadratic"))


def test_the_replica_reserved_its_bundles_from_tp(base_url: str, ray_session) -> None:
    groups = [g for g in ray_session.util.placement_group_table().values()
              if g["state"] == "CREATED"]
    want = load_config(yaml_app("tp2.yaml")["args"]).placement_bundles()
    assert any(list(g["bundles"].values()) == want and g["strategy"] == "STRICT_PACK"
               for g in groups), groups
