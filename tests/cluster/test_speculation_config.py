"""The `speculation:` section: both disaggregated YAMLs validate, bundles come from the pools'
tp, and contradictions are refused naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster.config import TandemConfig
from tests.cluster.test_config import app_args


@pytest.mark.parametrize("name", ["disaggregated.yaml", "disaggregated-gpu.yaml"])
def test_disaggregated_yamls_validate(name: str) -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from tests.cluster.test_config import CONFIGS

    ServeDeploySchema.model_validate(yaml.safe_load((CONFIGS / name).read_text()))
    config = TandemConfig.model_validate(app_args(name))
    assert config.speculation.is_disaggregated


def test_bundles_per_pool() -> None:
    cpu = TandemConfig.model_validate(app_args("disaggregated.yaml"))
    assert cpu.placement_bundles() == [{"CPU": 0.01}, {"CPU": 1.0}, {"CPU": 1.0}]
    assert cpu.draft_bundles() == [[{"CPU": 1.0}]]
    opts = cpu.model_server_options()
    assert opts["placement_group_strategy"] == "STRICT_PACK"
    gpu = TandemConfig.model_validate(app_args("disaggregated-gpu.yaml"))
    assert gpu.placement_bundles() == [{"CPU": 1.0}] + [{"CPU": 2.0, "GPU": 1.0}] * 4
    assert gpu.draft_bundles() == [[{"CPU": 2.0, "GPU": 1.0}]] * 2
    one = TandemConfig.model_validate({"speculation": {"placement": "disaggregated"}})
    assert one.placement_bundles() == [{"CPU": 0.01}, {"CPU": 1.0}]  # verify tp 1: an actor
    assert TandemConfig().draft_bundles() == [] and TandemConfig().placement_bundles() is None


@pytest.mark.parametrize(("args", "field"), [
    ({"model": {"auto_mode": "spec_pipelined"}}, "model.auto_mode"),
    ({"model": {"default_mode": "spec_pipelined"}}, "model.default_mode"),
    ({"model": {"tp": 2}, "speculation": {"placement": "disaggregated", "verify": {"tp": 4}}},
     "speculation.verify.tp"),
    ({"speculation": {"placement": "disaggregated", "draft": {"dtype": "int8"}}}, "dtype"),
    ({"speculation": {"placement": "split"}}, "placement"),
])
def test_contradictions_name_the_field(args: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        TandemConfig.model_validate(args)
