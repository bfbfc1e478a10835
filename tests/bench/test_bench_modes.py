"""bench.modes: each measured mode's warm-up (on CUDA, its Triton compiles) stays out of its
timed run, counted in forward passes, not in seconds."""

from __future__ import annotations

import argparse

import pytest

from bench import modes
from bench.modes import parse_args, run_modes
from engine.engine import EngineConfig, LLMEngine
from engine.scheduler import SchedulerConfig
from models.checkpoint import DEFAULT_MODEL_DIR
from models.heldout import load_prompts


@pytest.fixture(scope="module")
def engine() -> LLMEngine:
    config = EngineConfig(num_blocks=256, scheduler=SchedulerConfig(max_batch_tokens=2048))
    return LLMEngine.from_checkpoint(DEFAULT_MODEL_DIR, config, "cpu")


ARGS = ["--prompts", "2", "--max-tokens", "6", "--batches", "1", "2", "--linear-blocks", "4",
        "--quadratic-blocks", "3", "--thresholds", "0.9"]


def test_each_timed_run_excludes_its_warm_up(engine: LLMEngine) -> None:
    prompts = load_prompts(DEFAULT_MODEL_DIR, num=2)
    before = engine.num_steps
    cold = run_modes(engine, prompts, parse_args(ARGS), 0)
    cold_steps = engine.num_steps - before
    before = engine.num_steps
    warm = run_modes(engine, prompts, parse_args(ARGS), 2)
    warm_steps = engine.num_steps - before
    # every mode, block and threshold at both batch sizes: 4 configurations x 2 batches
    assert len(warm) == 8
    assert [(r.mode, r.block, r.batch) for r in warm] == [(r.mode, r.block, r.batch) for r in cold]
    assert cold_steps == sum(r.forwards for r in cold)
    # the rows count only their timed run; the engine ran each configuration three times
    assert [r.forwards for r in warm] == [r.forwards for r in cold]
    assert [r.tokens for r in warm] == [r.tokens for r in cold]
    assert warm_steps == 3 * sum(r.forwards for r in warm)


@pytest.mark.parametrize("given, resolved", [([], 0), (["--warmup-runs", "3"], 3)])
def test_run_resolves_warm_up_runs_without_changing_the_callers_args(
        monkeypatch: pytest.MonkeyPatch, given: list[str], resolved: int) -> None:
    seen: list[tuple[argparse.Namespace, int]] = []
    monkeypatch.setattr(modes, "run_modes", lambda engine, prompts, args, warmup_runs:
                        seen.append((args, warmup_runs)) or [])
    args = parse_args(ARGS + given)
    before = vars(args).copy()
    modes.run(args)
    assert seen == [(args, resolved)]  # on CPU, unasked: nothing to warm
    assert vars(args) == before
