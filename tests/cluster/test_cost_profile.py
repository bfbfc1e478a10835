"""Which cost profile a server uses (engine/cost_profile.py, cluster/model_server.py): a
measured one for its device and checkpoint when bench/profiles/ has it, the CPU default on
CPU, else a short start-up calibration whose profile the SLO policy accepts."""

from __future__ import annotations

import logging
import shutil

import pytest

from cluster.config import load_config
from cluster.model_server import DEFAULT_PROFILE, cost_profile
from engine import cost_profile as cp
from engine.executor import ModelExecutor
from engine.slo_policy import SLOSchedulingPolicy
from policies.profile import Profile


def test_measured_profile_for_this_device_and_model_wins(tmp_path, monkeypatch,
                                                         caplog) -> None:
    monkeypatch.setattr(cp, "PROFILES_DIR", tmp_path)
    config = load_config({})
    with caplog.at_level(logging.INFO, logger="cluster.model_server"):
        assert cost_profile(config) == str(DEFAULT_PROFILE)
    assert "CPU default" in caplog.text
    measured = tmp_path / "cpu-tandem-tiny.json"
    assert cp.profile_path("cpu", "tandem-tiny") == measured
    shutil.copy(DEFAULT_PROFILE, measured)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cluster.model_server"):
        assert cost_profile(config) == str(measured)
    assert "measured for this device and model" in caplog.text


def test_calibration_gives_a_profile_the_policy_takes(tiny_model) -> None:
    prior = Profile.load(DEFAULT_PROFILE)
    executor = ModelExecutor(tiny_model, 64 * 17, 16)
    profile = cp.calibrate(executor, prior, seconds=0.5)
    assert len(profile.cost) == len(cp.CALIBRATION_SHAPES)
    assert all(s > 0 for _, _, s in profile.cost)
    by_shape = {(t, r): s for t, r, s in profile.cost}
    assert by_shape[(64, 64)] > by_shape[(1, 1)]  # 64 decoders cost more than one
    assert profile.traces == prior.traces and "start-up" in profile.meta["kind"]
    SLOSchedulingPolicy.from_profile(profile)  # the policy fits its cost model to it


def test_calibration_refuses_a_cache_too_small(tiny_model) -> None:
    with pytest.raises(ValueError, match="too small"):
        cp.calibrate(ModelExecutor(tiny_model, 4, 16), Profile.load(DEFAULT_PROFILE), 0.1)
