"""Replay a workload on the real engine in wall-clock time, under one policy.

Requests arrive at their Poisson times (taken at step boundaries, as a server's engine loop
would), carry their SLO, and are refused at admission or run to max_tokens (ignore_eos, so
that lengths follow the workload). Times are measured from each request's scheduled
arrival, so waiting for the step in flight counts against its TTFT.
"""

from __future__ import annotations

import statistics
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from engine.engine import EngineConfig, LLMEngine
from engine.executor import Executor, ModelExecutor
from engine.params import DecodeParams, Mode, SamplingParams
from engine.plan import StepOutput, StepPlan
from engine.policy import AdmissionError, SchedulingPolicy
from engine.slo_policy import SLOSchedulingPolicy
from engine.trace_executor import SimClock
from models.checkpoint import DEFAULT_MODEL_DIR, load_checkpoint
from models.heldout import load_prompts
from models.tokenizer import TextCodec
from policies.cost_model import CostModel
from policies.metrics import RequestResult
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.step_clock import StepClock
from policies.workloads import RequestSpec

W = TypeVar("W", bound=SchedulingPolicy)


def kept_into(out: list[W], wrap: Callable[[SchedulingPolicy], W]
              ) -> Callable[[SchedulingPolicy], SchedulingPolicy]:
    """A wrapper for EngineBench.run that also keeps the wrapped policy in out, to be read
    after the run (bench/slo_engine_cells.py, bench/slo_engine_diag.py)."""
    def keep(policy: SchedulingPolicy) -> W:
        out.append(wrap(policy))
        return out[-1]
    return keep


def prompt_ids(prompts: Sequence[list[int]], spec: RequestSpec) -> list[int]:
    """A request's prompt: held-out prompt `prompt_index` cut to num_prompt tokens, joined
    with the next ones where it is shorter."""
    ids: list[int] = []
    k = spec.prompt_index
    while len(ids) < spec.num_prompt:  # join held-out prompts for long ones
        ids += prompts[k % len(prompts)]
        k += 1
    return ids[:spec.num_prompt]


class EngineBench:
    """The model and its executor, loaded once and shared by every run."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.model = load_checkpoint()
        self.config = config = config or EngineConfig()
        self.codec = TextCodec.load(DEFAULT_MODEL_DIR)
        self.executor = ModelExecutor(self.model, config.num_blocks, config.block_size)
        self.prompts = [self.codec.encode(p) for p in load_prompts()]

    def engine(self, policy: SchedulingPolicy | None, executor: Executor | None = None,
               clock: Callable[[], float] = time.monotonic) -> LLMEngine:
        return LLMEngine(executor or self.executor, self.model.config, self.codec, self.config,
                         policy, clock)

    def prompt_ids(self, spec: RequestSpec) -> list[int]:
        return prompt_ids(self.prompts, spec)

    def slowdown(self, cost: CostModel, num_steps: int = 12) -> float:
        """How much slower this machine is now than the profile says: the median ratio of
        measured to predicted wall step times of AR batches of 1 and 8 requests. On a shared
        CPU other processes come and go; the engine runs scale SLOs and arrival rates by
        this, measured right before them, so that "1.5x AR alone" means now."""
        ratios = []
        for n in (1, 8):
            eng = self.engine(None)
            for i in range(n):
                eng.add_request(self.prompts[i][:32], SamplingParams(max_tokens=num_steps + 2,
                                                                     ignore_eos=True, seed=i))
            eng.step()  # prefill
            for _ in range(num_steps):
                t0 = time.perf_counter()
                eng.step()
                ratios.append((time.perf_counter() - t0) / cost.predict(n, n))
        # Never below 1: the profile was measured on a quiet machine, and a probe that ran
        # in a lull would tighten every SLO for a run that may not get one.
        return max(1.0, statistics.median(ratios))

    def call_scale(self, cost: CostModel, slowdown: float | None) -> tuple[ScaledCost, float]:
        """One SLO and arrival-rate scale for every run of a call: `slowdown` where given,
        else the probe's; with the probe, which is measured (and printed) either way."""
        probe = self.slowdown(cost)
        scaled = ScaledCost(cost, probe if slowdown is None else slowdown)
        print(f"SLO scale x{scaled.factor:.3f} for every seed and policy of this call (probe "
              f"x{probe:.3f})", flush=True)
        return scaled, probe

    def run(self, specs: Sequence[RequestSpec], profile: Profile, config: PolicyConfig,
            wrap: Callable[[SchedulingPolicy], SchedulingPolicy] | None = None,
            timing: StepClock | None = None) -> list[RequestResult]:
        """wrap: around the engine-side policy (bench/slo_engine_diag.py times it). timing:
        run in the profile's time instead of the wall's (ProfileTimed); None: wall time."""
        clock: Callable[[], float] = time.monotonic
        wait: Callable[[float], None] = time.sleep  # until the next arrival, engine idle
        executor = self.executor
        if timing is not None:
            sim = SimClock()
            clock, executor = sim, ProfileTimed(self.executor, timing, sim)

            def wait(seconds: float) -> None:
                sim.now += seconds
        policy: SchedulingPolicy = SLOSchedulingPolicy(SLOPolicy(profile, config), clock)
        if wrap is not None:
            policy = wrap(policy)
        eng = self.engine(policy, executor, clock)
        arrivals = sorted(specs, key=lambda s: s.arrival_s)
        results = {s.id: RequestResult(s.id, s.kind, s.arrival_s, s.slo) for s in arrivals}
        live: dict[str, object] = {}
        t0, k = clock(), 0
        while k < len(arrivals) or eng.has_unfinished():
            now = clock() - t0
            while k < len(arrivals) and arrivals[k].arrival_s <= now:
                self._add(eng, arrivals[k], t0, results, live)
                k += 1
            if not eng.has_unfinished():
                if k < len(arrivals):  # else the last arrivals were all refused: done
                    wait(max(0.0, arrivals[k].arrival_s - (clock() - t0)))
                continue
            for out in eng.step():
                if out.finished:
                    self._finish(live.pop(out.request_id), t0, results[out.request_id],
                                 clock())
        return [results[s.id] for s in arrivals]

    def _add(self, eng: LLMEngine, spec: RequestSpec, t0: float,
             results: dict[str, RequestResult], live: dict) -> None:
        sampling = SamplingParams(max_tokens=spec.max_tokens, ignore_eos=True,
                                  seed=zlib.crc32(spec.id.encode()))
        try:
            req = eng.add_request(self.prompt_ids(spec), sampling, DecodeParams(mode=Mode.AUTO),
                                  request_id=spec.id, priority=spec.slo.priority, slo=spec.slo)
        except AdmissionError as err:
            res = results[spec.id]
            res.refused, res.status = err.reason, err.status
            res.finish_s = eng.clock() - t0
            return
        req.arrival_time = t0 + spec.arrival_s  # measure from the scheduled arrival
        live[spec.id] = req

    @staticmethod
    def _finish(req, t0: float, res: RequestResult, now: float) -> None:  # noqa: ANN001
        st = req.stats
        res.num_output = len(req.output_ids)
        res.first_token_s = st.first_token_time - t0 if st.first_token_time else None
        res.finish_s = (st.token_times[-1] if st.token_times else now) - t0


class ProfileTimed(Executor):
    """The real model's steps on a simulated clock: each step lasts what the profile's
    StepClock draws for its batch (the simulator's step times), whatever the wall took. The
    engine, its scheduler and policy, the requests and their acceptance are the real ones;
    only time is the simulator's, so a run is the same on a busy machine as on a quiet one
    and sets the simulator's time beside the engine's mechanics (BENCHMARKS.md, #18)."""

    def __init__(self, inner: Executor, timing: StepClock, clock: SimClock) -> None:
        self.inner, self.timing, self.clock = inner, timing, clock

    def step(self, plan: StepPlan) -> StepOutput:
        out = self.inner.step(plan)
        seconds = self.clock.pass_step(plan, self.timing)
        return replace(out, elapsed_s=seconds)


class ScaledCost:
    """A cost model's predictions times a factor (what workloads.generate reads)."""

    def __init__(self, cost: CostModel, factor: float) -> None:
        self.cost, self.factor = cost, factor

    def predict(self, num_tokens: int, num_requests: int = 1) -> float:
        return self.factor * self.cost.predict(num_tokens, num_requests)
