"""The shard-worker path over NCCL, without Ray (the GPU machine has none): tp=1 through
ShardWorker equals the unsharded engine. scripts/gpu_check.sh runs the same check as
`python -m actors.gpu_smoke --tp 1 --device cuda`."""

from __future__ import annotations

import pytest

from actors.gpu_smoke import SmokeSpec, check_sharded
from models.checkpoint import DEFAULT_MODEL_DIR


@pytest.mark.gpu
def test_tp1_over_nccl_equals_the_unsharded_engine() -> None:
    result = check_sharded(SmokeSpec(str(DEFAULT_MODEL_DIR), tp=1, device="cuda"))
    assert result.backend == "nccl"
    assert result.max_abs_logit_diff <= 1e-5
    assert result.ok, result.tokens_equal
