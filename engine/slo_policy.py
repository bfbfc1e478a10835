"""The SLO-aware scheduling policy on the engine: policies.policy.SLOPolicy (which decides
over plain numbers) behind the engine's SchedulingPolicy interface, with a clock.

Everything it learns arrives in the views the scheduler hands it (the previous step's
record, the requests that left); it keeps no per-step state of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.policy import AdmissionError, SchedulingPolicy
from policies.decision import BatchDecision, SchedulerView
from policies.policy import PolicyConfig, SLOPolicy
from policies.profile import Profile
from policies.request_view import RequestView


class SLOSchedulingPolicy(SchedulingPolicy):
    def __init__(self, policy: SLOPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        """clock: the same seconds as the engine's (request arrival and token times)."""
        self.policy, self.clock = policy, clock

    @classmethod
    def from_profile(cls, profile: Profile | str, config: PolicyConfig | None = None,
                     clock: Callable[[], float] = time.monotonic) -> SLOSchedulingPolicy:
        if not isinstance(profile, Profile):
            profile = Profile.load(profile)
        return cls(SLOPolicy(profile, config or PolicyConfig()), clock)

    def plan(self, view: SchedulerView) -> BatchDecision:
        return self.policy.plan(view, self.clock())

    def admit(self, request: RequestView, view: SchedulerView) -> None:
        refusal = self.policy.admit(request, self.clock(), view.running, view.waiting)
        if refusal is not None:
            raise AdmissionError(refusal.reason, refusal.status)
