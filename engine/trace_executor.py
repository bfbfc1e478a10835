"""An executor that runs no model: it replays a profile (policies/profile.py).

Behind the same `Executor` interface as the model, it answers each work of a plan so that
the engine's real decoding modes advance as the profile recorded: a verify or quadratic
work accepts the drafts the next recorded iteration accepted, a diffusion block takes as
many denoise passes as it did, and the step lasts what the profile's cost fit says for its
tokens and requests (policies/step_clock.py, with the profile's own noise). Each request is
bound to one recorded prompt and walks through that prompt's iterations in order, per
option (wrapping around), so it keeps its own acceptance as it would on the engine.
With `align` a speculative iteration instead reads the iteration of its option's trace that
covers the request's output position (see `_iteration_at`): a request that switches modes
mid-way (auto) then accepts as the trace did there, not as the trace's first iterations did.

Token ids carry no meaning here: every sampled token is FILLER (never the mask or EOS of
SIM_MODEL); the simulator sets ignore_eos so lengths follow the workload.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate

from engine.executor import Executor
from engine.plan import ChunkWork, StepOutput, StepPlan, WorkResult
from models.config import ModelConfig
from policies.modes import ChunkKind, Mode
from policies.option import Option
from policies.profile import Iteration, Profile
from policies.step_clock import StepClock

FILLER = 4
# The model a simulated engine pretends to serve: only its special ids and limits matter.
SIM_MODEL = ModelConfig(vocab_size=1 << 40, hidden_size=8, num_layers=1, num_heads=1,
                        num_kv_heads=1, head_dim=2, intermediate_size=8,
                        max_position_embeddings=1 << 40, mask_token_id=0, bos_token_id=1,
                        eos_token_id=2, pad_token_id=3)


class SimClock:
    """Simulated seconds: what the engine and its policy read as their clock."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def pass_step(self, plan: StepPlan, step_clock: StepClock) -> float:
        """Move past one step of plan: it lasts what step_clock draws for its tokens and
        requests. Returns those seconds (TraceExecutor; bench/slo_engine.py's ProfileTimed)."""
        seconds = step_clock.step_s(plan.num_tokens, len(plan.works))
        self.now += seconds
        return seconds


class TraceExecutor(Executor):
    def __init__(self, profile: Profile, step_clock: StepClock,
                 clock: SimClock | None = None,
                 on_step: Callable[[StepPlan, float], None] | None = None,
                 align: bool = False) -> None:
        """clock: advanced by each step's duration; on_step(plan, seconds): a hook for
        recording what ran; align: acceptance by output position (module doc)."""
        self.profile, self.step_clock = profile, step_clock
        self.clock = clock or SimClock()
        self.on_step = on_step
        self.align = align
        self.prompt_of: dict[str, int] = {}  # request id -> recorded prompt index
        self.prompt_len: dict[str, int] = {}  # request id -> prompt tokens (align)
        self._starts: dict[tuple[Option, int], list[int]] = {}  # iterations' output offsets
        self._cursors: dict[tuple[str, Option], int] = {}
        self._passes_left: dict[str, int] = {}  # diffusion: denoise passes of this block

    def bind(self, request_id: str, prompt_index: int, num_prompt: int = 0) -> None:
        self.prompt_of[request_id] = prompt_index
        self.prompt_len[request_id] = num_prompt

    def step(self, plan: StepPlan) -> StepOutput:
        results = [self._result(w) for w in plan.works]
        seconds = self.clock.pass_step(plan, self.step_clock)
        if self.on_step is not None:
            self.on_step(plan, seconds)
        return StepOutput(results, seconds)

    def _result(self, w: ChunkWork) -> WorkResult:
        n = len(w.sample_rows)
        if w.kind in (ChunkKind.VERIFY, ChunkKind.QUADRATIC):
            option = Option(w.mode, len(w.verify_drafts) + 1)
            _, tokens = (self._iteration_at(w.request_id, option, w.chunk.positions[0])
                         if self.align else self._next_iteration(w.request_id, option))
            return WorkResult([FILLER] * n, [1.0] * n, min(tokens - 1, len(w.verify_drafts)))
        if w.kind is ChunkKind.DENOISE:
            return WorkResult([FILLER] * n, self._denoise_probs(w))
        return WorkResult([FILLER] * n, [1.0] * n)  # prefill, ar, draft, commit

    def _denoise_probs(self, w: ChunkWork) -> list[float]:
        """Confident rows for an even share of the masks left, so that the block fills in
        the recorded number of passes (the mode commits rows at or above its threshold)."""
        block, masked = len(w.chunk.tokens), len(w.sample_rows)
        if masked == block - 1:  # the block's first pass
            forwards, _ = self._next_iteration(w.request_id, Option(w.mode, block))
            self._passes_left[w.request_id] = max(1, forwards - 1)  # the last is the commit
        left = max(1, self._passes_left.get(w.request_id, 1))
        self._passes_left[w.request_id] = left - 1
        commit = -(-masked // left)
        return [1.0] * commit + [0.0] * (masked - commit)

    def _next_iteration(self, request_id: str, option: Option) -> Iteration:
        prompts = self.profile.traces.get(option)
        if not prompts:
            return _never_accepted(option)
        trace = prompts[self.prompt_of.get(request_id, 0) % len(prompts)]
        key = (request_id, option)
        k = self._cursors.get(key, 0)
        self._cursors[key] = k + 1
        return trace[k % len(trace)]

    def _iteration_at(self, request_id: str, option: Option, position: int) -> Iteration:
        """The trace's iteration at the request's output offset: its first chunk position
        less the prompt (the iteration's seed is the last emitted token; offset 0 is the
        first iteration after the prefill, as the traces start). Where the offset falls
        inside a recorded iteration, the drafts from there are taken to run to that
        iteration's end: greedy drafts of the same text stop at the same wrong token."""
        prompts = self.profile.traces.get(option)
        if not prompts:
            return _never_accepted(option)
        index = self.prompt_of.get(request_id, 0) % len(prompts)
        trace = prompts[index]
        if not trace:
            return _never_accepted(option)
        starts = self._starts.get((option, index))
        if starts is None:
            starts = self._starts[(option, index)] = list(accumulate(
                (t for _, t in trace[:-1]), initial=0))
        total = starts[-1] + trace[-1][1]
        offset = (position - self.prompt_len.get(request_id, 0)) % total
        k = bisect_right(starts, offset) - 1
        forwards, tokens = trace[k]
        return forwards, starts[k] + tokens - offset


def _never_accepted(o: Option) -> Iteration:
    """No trace for this option: every draft is rejected, diffusion fills one token a pass."""
    return {Mode.SPEC_LINEAR: (2, 1), Mode.SPEC_QUADRATIC: (1, 1),
            Mode.DIFFUSION: (o.block, o.block)}[o.mode]
