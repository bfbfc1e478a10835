from __future__ import annotations

import json

import pytest

from policies.cost_model import CostModel
from policies.workload_spec import WorkloadSpecError, load_workloads, parse_workloads
from policies.workloads import WORKLOADS, capacity_rps, generate
from tests.policies.helpers import synthetic_profile

VOICE = {"voice": {"classes": [
    {"name": "voice", "weight": 3, "prompt_tokens": [16, 32], "output_tokens": [20, 40],
     "ttft_scale": 6, "tpot_scale": 0.7},
    {"name": "bulk", "weight": 7, "prompt_tokens": [32, 48], "output_tokens": [48, 96],
     "deadline_scale": 4}]}}


def test_a_spec_file_defines_workloads_that_generate_requests(tmp_path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(VOICE))
    mix = load_workloads(path)["voice"]
    assert [(c.name, w) for c, w in mix] == [("voice", 3.0), ("bulk", 7.0)]
    cost = CostModel(synthetic_profile().cost)
    specs = generate(mix, capacity_rps(mix, cost) * 0.3, 200, cost, num_prompts=4, seed=1)
    voice = [s for s in specs if s.kind == "voice"]
    assert 30 < len(voice) < 90  # weight 3 of 10
    for s in voice:
        assert 16 <= s.num_prompt <= 32 and 20 <= s.max_tokens <= 40
        assert s.slo.tpot_ms == pytest.approx(0.7 * cost.predict(1, 1) * 1e3, abs=0.1)
        assert s.slo.deadline_ms is None


@pytest.mark.parametrize(("body", "field"), [
    ({"w": {"classes": []}}, "w.classes"),
    ({"w": {"classes": [{"name": "a", "weight": 1, "prompt_tokens": [8, 4],
                         "output_tokens": [1, 2]}]}}, "w.classes[0].prompt_tokens"),
    ({"w": {"classes": [{"name": "a", "weight": -1, "prompt_tokens": [1, 4],
                         "output_tokens": [1, 2]}]}}, "w.classes[0].weight"),
    ({"w": {"classes": [{"name": "a", "weight": 1, "prompt_tokens": [1, 4],
                         "output_tokens": [1, 2], "tpot_scale": "fast"}]}},
     "w.classes[0].tpot_scale"),
    ({"w": {"classes": [{"name": "a", "weight": 1, "prompt_tokens": [1, 4],
                         "output_tokens": [1, 2], "tpot": 1}]}}, "w.classes[0].tpot"),
    ([], "(top level)"),
])
def test_a_bad_spec_names_the_field(body, field) -> None:
    with pytest.raises(WorkloadSpecError) as e:
        parse_workloads(body)
    assert e.value.field == field


def test_the_standard_workloads_have_a_tight_class_and_a_mixed_tight_one() -> None:
    tight = dict((c.name, c) for c, _ in WORKLOADS["tight"])["tight"]
    assert tight.tpot_scale is not None and tight.tpot_scale < 1.0  # below AR alone
    assert {c.name for c, _ in WORKLOADS["mixed_tight"]} == {"tight", "batch"}
