"""Measure the SLO profile on the real engine: step time against batch tokens and requests,
and acceptance traces of every speculative option (policies.profile describes the format).

Step times are wall times of engine steps (schedule + forward, the scheduler's step
records); each (tokens, requests) point is the median of its steps. Traces come
from greedy decoding of held-out prompts with ignore_eos, every prompt in every option.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence

from engine.engine import LLMEngine
from engine.params import DecodeParams, Mode, SamplingParams
from engine.policy import FirstComePolicy
from policies.decision import StepRecord
from policies.modes import ChunkKind
from policies.option import AR, DIFFUSION, LINEAR, QUADRATIC, TRACED, Option
from policies.profile import Iteration, Profile

# Batches whose steady-state steps give the cost points: lists of (mode, block, count),
# one option per request. Dense where auto decides (small batches, short blocks, AR batches
# with a few speculating requests), sparse elsewhere.
COST_BATCHES = (
    [[(AR, 1, n)] for n in (1, 2, 4, 8, 16, 32, 64)]
    + [[(LINEAR, 4, n)] for n in (1, 2, 4, 8, 16)]
    + [[(QUADRATIC, 3, n)] for n in (1, 2, 4, 8, 16)]
    + [[(QUADRATIC, 2, n)] for n in (1, 4)] + [[(QUADRATIC, 4, n)] for n in (1, 4)]
    + [[(LINEAR, 8, n)] for n in (1, 4)] + [[(LINEAR, 16, 1)], [(QUADRATIC, 6, 1)]]
    + [[(AR, 1, 8), (LINEAR, 4, 1)], [(AR, 1, 8), (QUADRATIC, 3, 2)],
       [(AR, 1, 16), (QUADRATIC, 3, 4)], [(AR, 1, 16), (LINEAR, 4, 4)]])


class Recorder:
    """Step times and each request's iterations, from the scheduler's step records."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, float]] = []
        self.iterations: dict[str, list[Iteration]] = defaultdict(list)
        self._open: dict[str, int] = defaultdict(int)  # forwards in an unfinished iteration

    def record(self, step: StepRecord | None) -> None:
        if step is None:
            return
        self.steps.append((step.num_tokens, step.num_requests, step.seconds))
        for w in step.works:
            if w.kind in (ChunkKind.PREFILL, ChunkKind.AR) or (
                    w.kind is ChunkKind.DRAFT and w.option is not None
                    and w.option.mode is QUADRATIC):
                continue
            self._open[w.request_id] += 1
            if w.num_emitted:  # the iteration ended: verify, quadratic, commit (or EOS)
                self.iterations[w.request_id].append(
                    (self._open.pop(w.request_id), w.num_emitted))


def _engine() -> LLMEngine:
    return LLMEngine.from_checkpoint(policy=FirstComePolicy())


def _run(eng: LLMEngine, recorder: Recorder, prompts: list[list[int]], options: list[Option],
         max_tokens: int | Sequence[int], max_steps: int | None = None) -> list[str]:
    """Run prompts[i] with options[i] (fixed modes) for max_tokens (or max_tokens[i]) tokens
    until done or max_steps; abort the rest."""
    lengths = [max_tokens] * len(prompts) if isinstance(max_tokens, int) else max_tokens
    ids = []
    for i, (p, option, n) in enumerate(zip(prompts, options, lengths, strict=True)):
        block = option.block if option.mode != AR else None
        req = eng.add_request(p, SamplingParams(max_tokens=n, ignore_eos=True, seed=i),
                              DecodeParams(mode=Mode(option.mode), block_length=block))
        ids.append(req.id)
    steps = 0
    while eng.has_unfinished() and (max_steps is None or steps < max_steps):
        eng.step()
        recorder.record(eng.scheduler.last_step)
        steps += 1
    for rid in ids:
        eng.abort(rid)
    return ids


def measure_cost(prompts: list[list[int]], rounds: int = 3, steps_per_batch: int = 6,
                 min_samples: int = 3) -> list[tuple]:
    """Median wall time per (tokens, requests) point, over `rounds` passes through every
    batch so that a burst of load from another process hits each point at most once; a
    point seen fewer than `min_samples` times is dropped."""
    eng, recorder = _engine(), Recorder()
    _run(eng, recorder, prompts[:4], [Option(AR)] * 4, 8)  # warm-up
    recorder.steps.clear()
    for r in range(rounds):
        for mix in COST_BATCHES[r % 2::2] + COST_BATCHES[(r + 1) % 2::2]:
            options = [Option(mode, block) for mode, block, n in mix for _ in range(n)]
            batch = [prompts[(i + r) % len(prompts)] for i in range(len(options))]
            _run(eng, recorder, batch, options, 200, max_steps=steps_per_batch + 1)
    groups: dict[tuple[int, int], list[float]] = defaultdict(list)
    for tokens, reqs, s in recorder.steps:
        groups[(tokens, reqs)].append(s)
    return [(t, r, statistics.median(v)) for (t, r), v in sorted(groups.items())
            if len(v) >= min_samples]


def record_traces(prompts: list[list[int]], max_tokens: int) -> dict[Option, list]:
    traces = {}
    for option in TRACED:
        recorder = Recorder()
        ids = _run(_engine(), recorder, prompts, [option] * len(prompts), max_tokens)
        traces[option] = [recorder.iterations[i] for i in ids]
    return traces


def calibrate(num_prompts: int = 16, max_tokens: int = 96, threads: int = 1) -> Profile:
    import torch

    from models.heldout import load_prompts

    torch.set_num_threads(threads)
    eng = _engine()
    prompts = [eng.tokenize(p) for p in load_prompts(num=num_prompts)]
    start = time.time()
    cost = measure_cost(prompts)
    traces = record_traces(prompts, max_tokens)
    meta = {"measured": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - start),
            "machine": f"{platform.machine()} {os.cpu_count()} cpus", "torch_threads": threads,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "model": "tandem-tiny", "num_prompts": num_prompts, "max_tokens": max_tokens,
            "diffusion": DIFFUSION + " threshold 0.9"}
    return Profile(cost, traces, meta)
