"""A step makes one host->device upload (the packed plan) and one device->host download (the
sampled tokens, probabilities, acceptance and scores), and nothing on the engine's or the
model's hot path reads a device value back on the way (issue 13 point 1).

On CPU there is no device to catch a sync, so two things stand in for CUDA's
`torch.cuda.set_sync_debug_mode("error")` (which bench/gpu.py applies on a GPU):
  - the transfer seam (engine/device_io.py) counts its calls, and
  - a torch function mode fails every host read (.tolist(), .item(), bool()/int() of a
    tensor, .cpu(), nonzero) and every tensor built from Python data (torch.tensor)
    whose caller lives in engine/, models/ or kernels/dispatch.py, outside the seam.
The CPU reference kernels (kernels/*_ref.py) may read back on the CPU and are not checked
here; their path off the CPU (TANDEM_KERNELS=torch on a GPU) is, on the meta device, by
tests/engine/test_sync_free_step_meta.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from engine.device_io import DeviceIO
from engine.params import DecodeParams, SamplingParams
from models.checkpoint import load_checkpoint
from models.fuse import fuse_projections
from tests.engine.helpers import make_engine

ROOT = Path(__file__).resolve().parents[2]
CHECKED = [ROOT / "engine", ROOT / "models", ROOT / "kernels" / "dispatch.py"]
SEAM = ROOT / "engine" / "device_io.py"
HOST_READS = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "cpu",
              "nonzero", "tensor", "as_tensor", "from_numpy", "numpy"}


def _caller() -> Path | None:
    """The first Python frame outside torch (and this file) that led to the op."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename).resolve()
        if "torch" not in path.parts and path != Path(__file__).resolve():
            return path
        frame = frame.f_back
    return None


class HostReadGuard(TorchFunctionMode):
    def __init__(self, checked: list[Path] = CHECKED) -> None:
        super().__init__()
        self.checked = checked
        self.violations: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = getattr(func, "__name__", str(func))
        if name in HOST_READS:
            path = _caller()
            if path is not None and path != SEAM and any(
                    path == c or c in path.parents for c in self.checked):
                self.violations.append(f"{name} from {path.relative_to(ROOT)}")
        return func(*args, **(kwargs or {}))


class CountingIO(DeviceIO):
    """The seam, recording the size of every transfer."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self.sizes: list[tuple[str, int]] = []

    def upload(self, values: list[int]) -> torch.Tensor:
        self.sizes.append(("up", len(values)))
        return super().upload(values)

    def download(self, values: torch.Tensor) -> list[int]:
        self.sizes.append(("down", values.numel()))
        return super().download(values)


@pytest.fixture(scope="module")
def fused_model():
    return fuse_projections(load_checkpoint())


def test_each_step_is_one_upload_and_one_download(fused_model, codec) -> None:
    engine = make_engine(fused_model, codec)
    io = CountingIO(engine.executor.device)
    engine.executor.io = io
    modes = ["ar", "diffusion", "spec_linear", "spec_quadratic"]
    for i, mode in enumerate(modes):  # one batch mixing prefill and every mode's chunks
        engine.add_request(f"def f{i}(x):", SamplingParams(max_tokens=12, seed=i,
                                                            temperature=0.7 * (i % 2)),
                           DecodeParams(mode=mode, block_length=4))
    guard = HostReadGuard()
    steps, modes_seen = 0, set()
    while engine.has_unfinished():
        before = len(io.sizes)
        with guard:
            outs = engine.step()  # schedule, executor step, update
        assert [d for d, _ in io.sizes[before:]] == ["up", "down"], io.sizes[before:]
        modes_seen |= {m for o in outs for m in o.modes}
        steps += 1
    assert steps > 4
    assert modes_seen >= set(modes)
    assert guard.violations == [], sorted(set(guard.violations))


def test_the_guard_sees_a_host_read_in_models() -> None:
    """Not vacuous: building a batch the old way (torch.tensor per field, models/batch.py)
    inside the guard is flagged."""
    from models.batch import Chunk, ChunkBatch

    guard = HostReadGuard()
    with guard:
        ChunkBatch.from_chunks([Chunk.causal([1, 2, 3])])
    assert any("models/batch.py" in v for v in guard.violations), guard.violations
