"""The GPU machine has no Ray, pydantic or FastAPI (PLATFORM-NOTES): what scripts/gpu_check.sh
runs there must import without them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'pydantic', 'fastapi', 'starlette', 'uvicorn'):
            raise ImportError('not on the GPU machine: ' + name)
sys.meta_path.insert(0, Block())
import bench.gpu, bench.kernels, bench.modes, bench.step_overhead, bench.sync_steps
import actors.gpu_smoke
import engine.engine, engine.cost_profile, kernels.dispatch, models.fuse
"""


def test_gpu_check_modules_import_without_ray_pydantic_fastapi() -> None:
    done = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
