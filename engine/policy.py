"""The scheduler's decisions behind one small interface: one plan per step, one admission
check per arriving request, both over plain data (policies/decision.py).

FirstComePolicy is the default: arrival order, each request's own mode (auto -> the
engine's default), the newest request preempted first, nobody refused or deferred. The
SLO-aware policy (engine/slo_policy.py over policies/policy.py) implements the same
interface. docs/ARCHITECTURE.md describes the seam.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

from policies.decision import BatchDecision, SchedulerView
from policies.modes import Mode
from policies.option import Option, option_of
from policies.request_view import RequestView

__all__ = ["AdmissionError", "FirstComePolicy", "PolicyError",
           "SchedulingPolicy", "WatchedPolicy"]


class AdmissionError(Exception):
    """A request refused at admission, with the reason and an HTTP-like status."""

    def __init__(self, reason: str, status: int = 429) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


class PolicyError(RuntimeError):
    """A policy's decision does not fit the scheduler's state (a bug in the policy)."""


class SchedulingPolicy(ABC):
    @abstractmethod
    def plan(self, view: SchedulerView) -> BatchDecision:
        """The step's decision: called once per step by Scheduler.schedule()."""

    def admit(self, request: RequestView, view: SchedulerView) -> None:  # noqa: B027
        """Raise AdmissionError to refuse a request before it joins the waiting queue."""


class WatchedPolicy(SchedulingPolicy):
    """Another policy, its decisions unchanged, with watch() called after each plan with the
    view, the decision and the plan's CPU seconds: how the benchmarks record a policy and the
    simulator charges a plan to its clock. Other attributes read through to the inner one."""

    def __init__(self, inner: SchedulingPolicy) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        if name == "inner":  # not set yet (a copy being built): no endless recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def plan(self, view: SchedulerView) -> BatchDecision:
        start = time.process_time()
        decision = self.inner.plan(view)
        self.watch(view, decision, time.process_time() - start)
        return decision

    def admit(self, request: RequestView, view: SchedulerView) -> None:
        self.inner.admit(request, view)

    @abstractmethod
    def watch(self, view: SchedulerView, decision: BatchDecision, cpu_s: float) -> None:
        """Called after each plan()."""


class FirstComePolicy(SchedulingPolicy):
    def __init__(self, auto_mode: Mode = Mode.SPEC_QUADRATIC,
                 auto_block: int | None = None) -> None:
        if auto_mode is Mode.AUTO:
            raise ValueError("auto_mode must be a concrete mode")
        self.auto_option = option_of(auto_mode, auto_block)

    def plan(self, view: SchedulerView) -> BatchDecision:
        by_arrival = sorted(view.requests, key=lambda v: v.arrival_s)
        options = {v.id: self.option(v) for v in view.requests}
        newest_first = sorted(view.running, key=lambda v: v.arrival_s, reverse=True)
        return BatchDecision(tuple(v.id for v in by_arrival), options,
                             victims=tuple(v.id for v in newest_first))

    def option(self, v: RequestView) -> Option:
        return v.fixed or self.auto_option
