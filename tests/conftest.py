"""Session-wide test setup. TRITON_INTERPRET must be set before any kernel module is
imported (triton reads it when @triton.jit runs), so it is set here, first."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():  # on a GPU the kernels run compiled, not interpreted
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

# One intra-op thread: tests share two cores with Ray's processes, and OpenMP threads that
# spin on an oversubscribed machine made a decode step 10x slower (measured: 13 ms of CPU
# per AR step with 1 thread vs 94 ms with 2 under load).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_session():
    """One Ray instance for the whole session (a per-test init costs ~7 s). Four logical
    CPUs so that a TP=2 placement group still leaves room for Serve replicas. Its workers
    at nice 0, as `tandem serve` starts them (cluster/cpu_placement.py), not at Ray's 15:
    beside two CPU-bound processes at nice 0, a replica at 15 took 65 s to start and its
    replacement after a kill was not serving 60 s later (flaky session, 2026-12-04)."""
    import ray

    from cluster import cpu_placement

    cpu_placement.ray_start_env(auth_off=True)
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=200 * 1024**2,
             ignore_reinit_error=True, log_to_driver=False)
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model():
    """The shipped default model, loaded once (read-only: do not train it in tests)."""
    from models.checkpoint import load_checkpoint

    return load_checkpoint()


@pytest.fixture(scope="session")
def codec():
    from models.checkpoint import DEFAULT_MODEL_DIR
    from models.tokenizer import TextCodec

    return TextCodec.load(DEFAULT_MODEL_DIR)
