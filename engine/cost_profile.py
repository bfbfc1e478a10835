"""Which step-cost profile a server uses on its device, and a short start-up calibration
when none was measured for it (issue 13 point 4).

Measured profiles live in bench/profiles/<device>-<model>.json (bench/gpu.py writes them on
a GPU); `find_profile` picks the one for this device and checkpoint. Without one, the
server times a few synthetic steps of the modes' shapes (~2 s, `calibrate`) and uses
those, with the acceptance traces of the default profile as the policy's prior.
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import torch

from engine.executor import ModelExecutor
from engine.synthetic import Shape, blocks_per_request, plan_for
from policies.profile import Profile

PROFILES_DIR = Path(__file__).resolve().parent.parent / "bench" / "profiles"
CALIBRATION_SHAPES = [Shape("decode b=1", "decode", 1, 1), Shape("decode b=4", "decode", 4, 1),
                      Shape("decode b=16", "decode", 16, 1),
                      Shape("decode b=64", "decode", 64, 1),
                      Shape("verify B=4", "verify", 1, 4), Shape("verify B=8", "verify", 4, 8),
                      Shape("quadratic B=3", "quadratic", 1, 3),
                      Shape("quadratic B=4", "quadratic", 4, 4)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def profile_path(device: torch.device | str, model: str) -> Path:
    """bench/profiles/<device>-<model>.json, e.g. nvidia-h200-tandem-tiny.json."""
    return PROFILES_DIR / f"{slug(device_name(device))}-{slug(model)}.json"


def find_profile(device: torch.device | str, model_dir: str | Path) -> Path | None:
    path = profile_path(device, Path(model_dir).name)
    return path if path.is_file() else None


def calibrate(executor: ModelExecutor, prior: Profile, seconds: float = 2.0,
              context: int = 256, model: str = "unnamed") -> Profile:
    """Median executor step time of each calibration shape, rounds over all shapes until
    `seconds` have passed (at least one round after a warm-up one)."""
    config, block_size = executor.model.config, executor.caches[0][0].shape[1]
    shapes = [s for s in CALIBRATION_SHAPES
              if s.batch * blocks_per_request(context, s.tokens_per_request, block_size)
              <= executor.caches[0][0].shape[0]]
    if not shapes:
        raise ValueError("calibrate: the KV cache is too small for any calibration shape")
    plans = [plan_for(s, config, context, block_size,
                      blocks_per_request(context, s.tokens_per_request, block_size))
             for s in shapes]
    times: list[list[float]] = [[] for _ in shapes]
    start = time.perf_counter()
    for round_ in range(1000):
        for plan, seen in zip(plans, times, strict=True):
            out = executor.step(plan)  # ends with the step's one download: the work is done
            if round_:
                seen.append(out.elapsed_s)
        if round_ and time.perf_counter() - start > seconds:
            break
    cost = [(s.num_tokens, s.batch, statistics.median(t)) for s, t in zip(shapes, times,
                                                                          strict=True)]
    meta = {"kind": "calibrated at start-up", "device": device_name(executor.device),
            "model": model, "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": round(time.perf_counter() - start, 1), "context_tokens": context,
            "traces": "from the prior profile: " + str(prior.meta.get("model", "unknown"))}
    return Profile(sorted(cost), dict(prior.traces), meta)


def calibrate_checkpoint(model_dir: str | Path, device: str, prior: Profile,
                         seconds: float = 2.0) -> Profile:
    """Load the checkpoint on its own (freed before the engine loads it), calibrate, and name
    the profile after the checkpoint."""
    from models.checkpoint import load_checkpoint
    from models.fuse import fuse_projections

    model = fuse_projections(load_checkpoint(model_dir, device=device))
    blocks = max(s.batch * blocks_per_request(256, s.tokens_per_request, 16)
                 for s in CALIBRATION_SHAPES)
    executor = ModelExecutor(model, blocks, 16)
    profile = calibrate(executor, prior, seconds, model=Path(model_dir).name)
    del executor, model
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return profile
