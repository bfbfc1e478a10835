"""ray_configs/disaggregated.yaml for real: one replica driving a verify pool (tp=2, in the
replica's placement group) and a bfloat16 draft pool (tp=1, its own placement group).
spec_pipelined and auto completions equal AR's greedy text."""

from __future__ import annotations

import pytest

from cluster.config import load_config
from tests.cluster.conftest import assert_serves_ar_text, running_app, yaml_app

pytestmark = pytest.mark.slow

PROMPT = "def parse_args("


@pytest.fixture(scope="module")
def base_url(ray_session) -> str:
    app = yaml_app("disaggregated.yaml")
    with running_app(load_config(app["args"]), app["name"]) as url:
        yield url


def test_pipelined_completions_equal_ar(base_url: str, tiny_model, codec) -> None:
    assert_serves_ar_text(base_url, tiny_model, codec, PROMPT, ("spec_pipelined", "auto", "ar"))


def test_each_pool_is_packed_in_its_own_placement_group(base_url: str, ray_session) -> None:
    config = load_config(yaml_app("disaggregated.yaml")["args"])
    groups = [(list(g["bundles"].values()), g["strategy"])
              for g in ray_session.util.placement_group_table().values()
              if g["state"] == "CREATED"]
    assert (config.placement_bundles(), "STRICT_PACK") in groups, groups
    for bundles in config.draft_bundles():
        assert (bundles, "STRICT_PACK") in groups, groups
