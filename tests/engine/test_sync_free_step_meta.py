"""The executor's step with the torch reference kernels (TANDEM_KERNELS=torch), run off the CPU.

tests/engine/test_sync_free_step.py checks engine/ and models/ on the CPU, where the reference
kernels may read device values back (free there) and are not checked. Here every step of a
real engine run is replayed by a second executor whose model, cache and inputs live on the
meta device, where every read-back (bool(), .item(), .tolist(), nonzero, indexing with a 0-d
tensor) raises, as a sync would on a GPU and as it would break CUDA-graph capture: the whole
reference path of a step, forward, KV store, sampling and acceptance, must run without one.
A tensor built from Python data (a blocking host->device copy on a GPU, allowed on meta) is
caught by the CPU test's guard, here over kernels/ too.
"""

from __future__ import annotations

import copy

import pytest
import torch

from engine.device_io import DeviceIO
from engine.executor import ModelExecutor
from engine.params import DecodeParams, SamplingParams
from engine.plan import StepOutput, StepPlan
from models.checkpoint import load_checkpoint
from models.fuse import fuse_projections
from tests.engine.helpers import make_engine
from tests.engine.test_sync_free_step import CHECKED, ROOT, HostReadGuard


class MetaIO(DeviceIO):
    """The upload lands on the meta device; the download returns zeros of the right size
    (a meta tensor has no values), so the step runs to its end."""

    def upload(self, values: list[int]) -> torch.Tensor:
        self.num_uploads += 1
        return torch.empty(len(values), dtype=torch.int64, device="meta")

    def download(self, values: torch.Tensor) -> list[int]:
        assert values.device.type == "meta"
        self.num_downloads += 1
        return [0] * values.numel()


class ShadowExecutor(ModelExecutor):
    """Runs each plan on the CPU (the engine goes on with its results) and again on meta."""

    def __init__(self, cpu: ModelExecutor, meta: ModelExecutor) -> None:
        self.cpu, self.meta = cpu, meta
        self.device, self.num_meta_steps = cpu.device, 0
        self.guard = HostReadGuard(CHECKED + [ROOT / "kernels"])

    def step(self, plan: StepPlan) -> StepOutput:
        with self.guard:
            self.meta.step(plan)
        self.num_meta_steps += 1
        return self.cpu.step(plan)


def _meta_executor(model, num_blocks: int) -> ModelExecutor:
    executor = ModelExecutor(copy.deepcopy(model).to("meta"), num_blocks)
    executor.io = MetaIO(executor.device)
    return executor


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_a_reference_step_has_no_host_read_off_the_cpu(codec, monkeypatch: pytest.MonkeyPatch,
                                                        temperature: float) -> None:
    """Greedy alone, and sampled with top-k / top-p beside greedy rows: the two cases the
    CPU reference skips work on (no filter, no noise)."""
    monkeypatch.setenv("TANDEM_KERNELS", "torch")
    model = fuse_projections(load_checkpoint())
    engine = make_engine(model, codec, num_blocks=256)
    shadow = ShadowExecutor(engine.executor, _meta_executor(model, 256))
    assert shadow.meta.device.type == "meta"
    engine.executor = shadow
    modes = ["ar", "diffusion", "spec_linear", "spec_quadratic"]
    for i, mode in enumerate(modes):
        sampled = temperature > 0 and i % 2 == 1
        engine.add_request(f"def f{i}(x):", SamplingParams(
            max_tokens=10, seed=i, temperature=temperature if sampled else 0.0,
            top_k=20 if sampled else 0, top_p=0.9 if sampled else 1.0),
            DecodeParams(mode=mode, block_length=4))
    modes_seen = set()
    while engine.has_unfinished():
        modes_seen |= {m for o in engine.step() for m in o.modes}
    assert modes_seen >= set(modes)
    assert shadow.num_meta_steps > 4
    assert shadow.meta.io.num_downloads == shadow.num_meta_steps
    assert shadow.guard.violations == [], sorted(set(shadow.guard.violations))
