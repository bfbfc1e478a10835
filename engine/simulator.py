"""The SLO simulator: the real engine, in simulated time, on a profile instead of a model.

An LLMEngine with its real scheduler, decoding modes, paged KV bookkeeping and policy runs a
workload (policies/workloads.py) with a TraceExecutor (engine/trace_executor.py) in place of
the model: acceptance and step times replayed from the profile, the clock advanced by each
step. So the simulator decides exactly as the engine does, because it is the engine; only
the executor and the clock differ (tests/engine/test_simulator_identity.py checks it step
by step). Arrivals are taken at step boundaries, as a server's engine loop takes them.

It lives in engine/ and not in policies/ because it drives the engine's scheduler, which
plans real chunks (models.batch) and so imports torch; policies/ stays torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.engine import EngineConfig, LLMEngine
from engine.params import DecodeParams, Mode, SamplingParams
from engine.plan import StepPlan
from engine.policy import AdmissionError, SchedulingPolicy, WatchedPolicy
from engine.request import Request
from engine.scheduler import SchedulerConfig
from engine.slo_policy import SLOSchedulingPolicy
from engine.trace_executor import FILLER, SIM_MODEL, SimClock, TraceExecutor
from policies.decision import BatchDecision, SchedulerView
from policies.metrics import RequestResult
from policies.option import Option
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.step_clock import StepClock
from policies.workloads import RequestSpec

# One step as the scheduler planned it: (request id, chunk kind, mode, batch tokens) per work.
PlanRecord = tuple[tuple[str, str, str, int], ...]


@dataclass(frozen=True)
class SimConfig:
    max_batch_tokens: int = 2048
    max_num_seqs: int = 64
    max_prefill_chunk: int = 1024
    num_kv_blocks: int = 512
    block_size: int = 16
    noise: float | None = None  # lognormal sigma of step times (None: the profile's own)
    drift: float = 0.0  # sigma of a slow AR(1) wander in log step time (policies/step_clock.py)
    drift_rho: float = 0.995  # its correlation from one step to the next
    seed: int = 0
    record_plans: bool = False  # keep every step's plan in Simulator.plans
    # The policy's plan CPU time advances the clock, as on the engine, where schedule() runs
    # inside a step's wall time (auto's plan is ~3x AR's: BENCHMARKS.md, "ninth session").
    # Not deterministic: it is this machine's CPU time.
    charge_plan: bool = False
    # Speculative acceptance by output position instead of by iteration count per option
    # (engine/trace_executor.py); off: the committed tables were made without it.
    align_traces: bool = False

    def engine_config(self) -> EngineConfig:
        return EngineConfig(self.num_kv_blocks, self.block_size, scheduler=SchedulerConfig(
            self.max_batch_tokens, self.max_num_seqs, self.max_prefill_chunk))


def plan_record(plan: StepPlan) -> PlanRecord:
    return tuple((w.request_id, str(w.kind), w.mode, w.num_tokens) for w in plan.works)


class ChargedPlan(WatchedPolicy):
    """A policy whose plan() takes its own CPU time off the simulated clock."""

    def __init__(self, inner: SchedulingPolicy, clock: SimClock) -> None:
        super().__init__(inner)
        self.clock = clock

    def watch(self, view: SchedulerView, decision: BatchDecision, cpu_s: float) -> None:
        self.clock.now += cpu_s


class Simulator:
    def __init__(self, profile: Profile, policy: SLOPolicy | SchedulingPolicy,
                 config: SimConfig = SimConfig()) -> None:
        self.profile, self.config = profile, config
        self.clock = SimClock()
        self.plans: list[PlanRecord] = []
        step_clock = StepClock(profile.cost, config.noise, config.seed, drift=config.drift,
                               drift_rho=config.drift_rho)
        self.executor = TraceExecutor(profile, step_clock, self.clock,
                                      self._on_step if config.record_plans else None,
                                      align=config.align_traces)
        if isinstance(policy, SLOPolicy):
            policy = SLOSchedulingPolicy(policy, self.clock)
        if config.charge_plan:
            policy = ChargedPlan(policy, self.clock)
        self.engine = LLMEngine(self.executor, SIM_MODEL, None, config.engine_config(), policy,
                                clock=self.clock)

    @property
    def now(self) -> float:
        return self.clock.now

    @property
    def num_steps(self) -> int:
        return self.engine.num_steps

    def run(self, specs: Sequence[RequestSpec], fixed: Option | None = None
            ) -> list[RequestResult]:
        """Run every request to completion (or refusal); results in arrival order. fixed:
        every request asks for this option instead of auto."""
        arrivals = sorted(specs, key=lambda s: s.arrival_s)
        results = {s.id: RequestResult(s.id, s.kind, s.arrival_s, s.slo) for s in arrivals}
        live: dict[str, Request] = {}
        k = 0
        while True:
            while k < len(arrivals) and arrivals[k].arrival_s <= self.clock.now:
                self._arrive(arrivals[k], k, fixed, results[arrivals[k].id], live)
                k += 1
            if self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.finished:
                        self._finish(live.pop(out.request_id), results[out.request_id])
            elif k < len(arrivals):
                self.clock.now = arrivals[k].arrival_s  # idle until the next arrival
            else:
                return [results[s.id] for s in arrivals]

    def _arrive(self, spec: RequestSpec, index: int, fixed: Option | None,
                res: RequestResult, live: dict[str, Request]) -> None:
        # Distinct prompt tokens per request: no prefix is shared (the profile has no text).
        start = FILLER + 1 + index * (spec.num_prompt + 1)
        prompt = range(start, start + spec.num_prompt)
        decode = DecodeParams(mode=Mode.AUTO, allow_lossy=spec.slo.allow_lossy)
        if fixed is not None:
            block = None if fixed.mode is Mode.AR else fixed.block
            decode = DecodeParams(mode=fixed.mode, block_length=block,
                                  allow_lossy=spec.slo.allow_lossy)
        sampling = SamplingParams(max_tokens=spec.max_tokens, ignore_eos=True, seed=0)
        try:
            req = self.engine.add_request(prompt, sampling, decode, spec.id,
                                          spec.slo.priority, spec.slo, spec.arrival_s)
        except AdmissionError as err:
            res.refused, res.status, res.finish_s = err.reason, err.status, self.clock.now
            return
        self.executor.bind(spec.id, spec.prompt_index, spec.num_prompt)
        live[spec.id] = req

    def _finish(self, req: Request, res: RequestResult) -> None:
        res.num_output = len(req.output_ids)
        res.first_token_s = req.stats.first_token_time
        res.finish_s = self.clock.now

    def _on_step(self, plan: StepPlan, seconds: float) -> None:
        self.plans.append(plan_record(plan))
