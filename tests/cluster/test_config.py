"""The deployment config: every YAML in ray_configs/ validates; bundles come from tp."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from cluster.config import TandemConfig, load_config
from engine.engine import EngineConfig
from engine.params import Mode

CONFIGS = Path(__file__).resolve().parents[2] / "ray_configs"


def app_args(name: str) -> dict:
    doc = yaml.safe_load((CONFIGS / name).read_text())
    (app,) = doc["applications"]
    assert app["import_path"] == "cluster.app:build_app"
    return app["args"]


@pytest.mark.parametrize("name", ["local.yaml", "tp2.yaml", "multinode-gpu.yaml",
                                  "autoscale.yaml"])
def test_every_yaml_validates_against_serve_and_the_config_model(name: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load((CONFIGS / name).read_text())
    ServeDeploySchema.model_validate(doc)
    config = TandemConfig.model_validate(app_args(name))
    assert isinstance(config.engine_config(), EngineConfig)
    opts = config.model_server_options()
    assert ("num_replicas" in opts) != ("autoscaling_config" in opts)


@pytest.mark.parametrize("name", ["local.yaml", "tp2.yaml", "multinode-gpu.yaml",
                                  "autoscale.yaml"])
def test_each_yamls_controller_env_is_what_controller_options_computes(name: str) -> None:
    """Serve's CLI reads controller_options from the YAML itself, so the YAML spells out what
    stream_guard.controller_options() gives serve.start: the two must not drift apart."""
    from cluster.stream_guard import controller_options

    doc = yaml.safe_load((CONFIGS / name).read_text())
    config = TandemConfig.model_validate(app_args(name))
    assert doc["controller_options"] == controller_options(config)


def test_yaml_specifics() -> None:
    local = load_config(app_args("local.yaml"))
    assert local.model.tp == 1 and local.placement_bundles() is None
    assert local.model_server.ray_actor_options.num_cpus == 0  # else a 2-CPU box never places it
    assert local.model_server_options()["health_check_period_s"] == 2  # Serve's option name
    assert local.model.engine_core_cpus == "auto"  # the core alone on a CPU (cpu_placement)
    tp2 = load_config(app_args("tp2.yaml"))
    assert tp2.placement_bundles() == [{"CPU": 0.01}, {"CPU": 1}, {"CPU": 1}]
    gpu = load_config(app_args("multinode-gpu.yaml"))
    bundles = gpu.placement_bundles()
    assert len(bundles) == 1 + gpu.model.tp and all(b["GPU"] == 1 for b in bundles[1:])
    opts = gpu.model_server_options()
    assert opts["placement_group_strategy"] == "STRICT_PACK"
    assert "max_replicas_per_node" not in opts  # Serve refuses it beside placement groups
    with pytest.raises(ValidationError, match="max_replicas_per_node"):
        load_config({**app_args("multinode-gpu.yaml"),
                     "model_server": {"max_replicas_per_node": 1}})
    auto = load_config(app_args("autoscale.yaml"))
    scaling = auto.model_server_options()["autoscaling_config"]
    assert scaling["min_replicas"] < scaling["max_replicas"]
    assert scaling["target_ongoing_requests"] > 0


def test_auto_bounds_reach_the_slo_policy_config() -> None:
    from cluster.speculation import slo_policy_config

    assert slo_policy_config(load_config({})) is None
    config = load_config({"model": {"auto_block_bounds": {"spec_linear": [4, 6]},
                                    "auto_threshold_bounds": [0.8, 0.9]}})
    selector = slo_policy_config(config).selector
    assert selector.block_bounds == (("spec_linear", 4, 6),)
    assert selector.threshold_bounds == (0.8, 0.9)


def test_engine_dataclasses_from_the_config() -> None:
    config = load_config({"model": {"num_kv_blocks": 64, "block_size": 8,
                                    "max_batch_tokens": 256, "max_model_len": 512}})
    ec = config.engine_config()
    assert (ec.num_blocks, ec.block_size, ec.max_model_len) == (64, 8, 512)
    assert ec.scheduler.max_batch_tokens == 256 and ec.scheduler.max_prefill_chunk == 256


@pytest.mark.parametrize("bad, where", [
    ({"model": {"tp": 0}}, "model.tp"),
    ({"model": {"unknown": 1}}, "model.unknown"),
    ({"model": {"default_mode": "turbo"}}, "model.default_mode"),
    ({"model": {"allowed_modes": ["ar"], "default_mode": "auto"}}, "default_mode"),
    ({"model": {"auto_mode": "diffusion"}}, "auto_mode"),
    ({"model": {"default_slo": {"ttft_ms": -1}}}, "ttft_ms"),
    ({"model_server": {"num_replicas": 2, "autoscaling_config": {"max_replicas": 2}}},
     "not both"),
    ({"model_server": {"autoscaling_config": {"min_replicas": 3, "max_replicas": 1}}},
     "autoscaling_config"),
    ({"api_keys": "secret"}, "api_keys"),
    ({"model_server": {"health_check_period_s": 0}}, "model_server.health_check_period_s"),
    ({"model": {"auto_threshold_bounds": [0.6, 1.5]}}, "model.auto_threshold_bounds"),
    ({"model": {"auto_block_bounds": {"spec_linear": [4, 80]}}}, "model.auto_block_bounds"),
    ({"model": {"auto_block_bounds": {"ar": [1, 1]}}}, "model.auto_block_bounds"),
])
def test_bad_configs_are_refused_naming_the_field(bad: dict, where: str) -> None:
    with pytest.raises(ValidationError) as err:
        TandemConfig.model_validate(bad)
    assert where in str(err.value)


def test_every_field_is_described() -> None:
    def walk(model: type) -> None:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields") and ann is not model:
                walk(ann)

    walk(TandemConfig)
    assert Mode.AUTO in TandemConfig().model.allowed_modes
