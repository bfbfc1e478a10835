"""The SLO-aware scheduling policy: engine requests in, plain numbers to policies/, decisions
back. All the deciding happens in policies.policy.SLOPolicy; this file only translates.

Per step the scheduler calls order() first (its timestamp starts the step's wall clock),
then defer() and choose_mode() per running request: the first such call of a step chooses
for the whole batch at once (requests share one step time: an option for each, or None to
sit the step out) and later calls read that choice. observe() feeds the cost model the
step's wall time (schedule + forward + update: what a request waits) and the acceptance
estimator each request's emitted tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.params import Mode
from engine.policy import DEFAULT_BLOCKS, AdmissionError, SchedulingPolicy
from engine.request import Request
from policies.option import AR, Option
from policies.policy import PolicyConfig, SLOPolicy, select_batch
from policies.profile import Profile
from policies.request_view import RequestView
from policies.slo import SLO

if TYPE_CHECKING:
    from engine.plan import StepOutput, StepPlan
    from engine.scheduler import Scheduler, StepEvents

NO_SLO = SLO()


class SLOSchedulingPolicy(SchedulingPolicy):
    def __init__(self, policy: SLOPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy, self.clock = policy, clock
        self._choices: dict[str, Option | None] = {}
        self._num_steps, self._chosen_at = 0, -1
        self._step_start: float | None = None

    @classmethod
    def from_profile(cls, profile: Profile | str, config: PolicyConfig | None = None
                     ) -> SLOSchedulingPolicy:
        if not isinstance(profile, Profile):
            profile = Profile.load(profile)
        return cls(SLOPolicy(profile, config or PolicyConfig()))

    # --- the scheduler's questions ---------------------------------------------------------

    def order(self, requests: list[Request]) -> list[Request]:
        if self._step_start is None:
            self._step_start = time.perf_counter()
        by_id = {r.id: r for r in requests}
        views = [view_of(r, None) for r in requests]
        return [by_id[v.id] for v in self.policy.order(views, self.clock())]

    def choose_mode(self, req: Request, sched: Scheduler) -> tuple[Mode, int]:
        option = self._choices_for(sched).get(req.id)
        if option is None:  # not foreseen (a one-token prompt), or deferred but run anyway
            option = self.policy.select([view_of(req, sched)], self.clock())[req.id]
            assert option is not None  # a lone request is never deferred
        return Mode(option.mode), option.block

    def defer(self, req: Request, sched: Scheduler) -> bool:
        choices = self._choices_for(sched)
        return req.id in choices and choices[req.id] is None

    def victim(self, candidates: list[Request], sched: Scheduler) -> Request | None:
        by_id = {r.id: r for r in candidates}
        v = self.policy.victim([view_of(r, sched) for r in candidates], self.clock())
        return None if v is None else by_id[v.id]

    def admit(self, req: Request, sched: Scheduler) -> None:
        refusal = self.policy.admit(view_of(req, sched), self.clock(),
                                    [view_of(r, sched) for r in sched.running],
                                    [view_of(r, sched) for r in sched.waiting])
        if refusal is not None:
            raise AdmissionError(refusal.reason, refusal.status)

    def observe(self, plan: StepPlan, out: StepOutput, events: StepEvents,
                sched: Scheduler) -> None:
        start, self._step_start = self._step_start, None
        wall = time.perf_counter() - start if start is not None else 0.0
        self._num_steps += 1
        prefill = [w.num_tokens for w in plan.works if w.kind == "prefill"]
        self.policy.observe_step(plan.num_tokens, len(plan.works), max(wall, out.elapsed_s),
                                 sum(prefill), len(prefill))
        finished = {r.id: r for r in events.finished}
        for work in plan.works:
            adv = events.advanced.get(work.request_id)
            req = finished.get(work.request_id) or sched.requests.get(work.request_id)
            if adv is None or req is None or work.kind == "prefill" or work.mode == AR:
                continue
            option = Option(work.mode, req.current_block)
            self.policy.observe_request(req.id, option, 1, len(adv.tokens))
        for req in events.finished:
            self.policy.finish(req.id)
        if self._num_steps % 256 == 0:  # aborted requests never finish: forget them too
            for rid in [r for r in self.policy.acceptance.factors if r not in sched.requests]:
                self.policy.finish(rid)

    # --- helpers ---------------------------------------------------------------------------

    def _choices_for(self, sched: Scheduler) -> dict[str, Option | None]:
        """This step's choices for the whole batch, made on the first question of the step."""
        if self._chosen_at != self._num_steps:
            self._choices, self._chosen_at = self._choose_all(sched), self._num_steps
        return self._choices

    def _choose_all(self, sched: Scheduler) -> dict[str, Option | None]:
        return select_batch(self.policy, sched.running, sched.waiting,
                            lambda r: view_of(r, sched), self.clock(), sched.config)


def option_of(mode: Mode, block: int | None) -> Option:
    if mode is Mode.AR:
        return Option(AR)
    return Option(mode.value, block or DEFAULT_BLOCKS[mode])


def view_of(req: Request, sched: Scheduler | None) -> RequestView:
    """The policy's plain-number picture of an engine request."""
    slo = req.slo if isinstance(req.slo, SLO) else NO_SLO
    mode = req.current_mode
    is_mid = (sched is not None and mode is not None
              and sched.modes[mode].is_mid_iteration(req))
    asked = req.decode.mode
    return RequestView(
        id=req.id, arrival_s=req.arrival_time, slo=slo, max_tokens=req.sampling.max_tokens,
        num_prompt=len(req.prompt_ids), num_output=len(req.output_ids),
        num_pending=req.num_pending, first_token_s=req.stats.first_token_time,
        option=option_of(mode, req.current_block) if mode is not None else None,
        fixed=None if asked is Mode.AUTO else option_of(asked, req.decode.block_length),
        is_mid_iteration=is_mid, allow_lossy=req.decode.allow_lossy or slo.allow_lossy,
        priority=req.priority or slo.priority)
