"""A discrete-event simulator of one engine under a policy, driven by a measured profile.

It mirrors engine/scheduler.py step for step: running requests in the policy's order get
their work first (a prefill chunk, or one forward of their option), then waiting ones are
started while the token budget and sequence limit allow; a paged KV pool of fixed blocks
is grown per work, and when it runs dry the policy's victim is preempted (its cache freed,
recomputed later). A step lasts what the StepClock says for its tokens and requests;
arrivals are taken at step boundaries, like the real engine's driver loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from policies.metrics import RequestResult
from policies.option import Option
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.sim_request import SimRequest
from policies.sim_step import apply_step, plan_step
from policies.step_clock import StepClock
from policies.workloads import RequestSpec


@dataclass(frozen=True)
class SimConfig:
    max_batch_tokens: int = 2048
    max_num_seqs: int = 64
    max_prefill_chunk: int = 1024
    num_kv_blocks: int = 512
    block_size: int = 16
    noise: float | None = None  # lognormal sigma of step times (None: the profile's own)
    seed: int = 0


class Simulator:
    def __init__(self, profile: Profile, policy: SLOPolicy, config: SimConfig = SimConfig()
                 ) -> None:
        self.profile, self.policy, self.config = profile, policy, config
        self.clock = StepClock(profile.cost, config.noise, config.seed)
        self.now = 0.0
        self.running: list[SimRequest] = []
        self.waiting: list[SimRequest] = []
        self.free_blocks = config.num_kv_blocks
        self.num_steps = 0

    def run(self, specs: Sequence[RequestSpec], fixed: Option | None = None
            ) -> list[RequestResult]:
        """Run every request to completion (or refusal); results in arrival order."""
        arrivals = sorted(specs, key=lambda s: s.arrival_s)
        results = {s.id: RequestResult(s.id, s.kind, s.arrival_s, s.slo) for s in arrivals}
        self._results, k = results, 0
        while k < len(arrivals) or self.running or self.waiting:
            while k < len(arrivals) and arrivals[k].arrival_s <= self.now:
                self._arrive(SimRequest(arrivals[k], fixed))
                k += 1
            if not (self.running or self.waiting):
                if k == len(arrivals):
                    break  # the last arrivals were refused
                self.now = arrivals[k].arrival_s
                continue
            self._step()
        return [results[s.id] for s in arrivals]

    # --- requests in and out ---------------------------------------------------------------

    def _arrive(self, r: SimRequest) -> None:
        refusal = self.policy.admit(r.view(), self.now, [x.view() for x in self.running],
                                    [x.view() for x in self.waiting])
        if refusal is not None:
            res = self._results[r.id]
            res.refused, res.status, res.finish_s = refusal.reason, refusal.status, self.now
            return
        self.waiting.append(r)

    def _finish(self, r: SimRequest) -> None:
        r.finish_s = self.now
        res = self._results[r.id]
        res.num_output, res.first_token_s, res.finish_s = r.num_output, r.first_token_s, self.now
        self._free(r)
        self.running.remove(r)
        self.policy.finish(r.id)

    def _free(self, r: SimRequest) -> None:
        self.free_blocks += r.num_blocks
        r.num_blocks, r.num_cached = 0, 0
        r.reset_mode()

    def _grow(self, r: SimRequest, num_slots: int) -> bool:
        need = math.ceil(num_slots / self.config.block_size) - r.num_blocks
        if need > self.free_blocks:
            return False
        if need > 0:
            self.free_blocks -= need
            r.num_blocks += need
        return True

    def _shrink(self, r: SimRequest) -> None:
        keep = math.ceil(r.num_cached / self.config.block_size)
        if keep < r.num_blocks:
            self.free_blocks += r.num_blocks - keep
            r.num_blocks = keep

    # --- one step --------------------------------------------------------------------------

    def _step(self) -> None:
        plan = plan_step(self)
        if not plan:
            raise RuntimeError("nothing could be scheduled: the KV pool is too small")
        num_tokens = sum(n for _, _, n in plan)
        dt = self.clock.step_s(num_tokens, len(plan))
        self.now += dt
        self.num_steps += 1
        prefill = [n for _, kind, n in plan if kind == "prefill"]
        apply_step(self, plan)
        self.policy.observe_step(num_tokens, len(plan), dt, sum(prefill), len(prefill))
