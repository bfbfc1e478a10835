"""The seam between the scheduler and a scheduling policy, as plain data (torch-free).

Once per step the scheduler hands its policy a read-only `SchedulerView` (every live
request as a RequestView, the batch limits, what the previous step measured, who left since)
and gets one `BatchDecision` back (the order, an option per request, who sits the step out,
whom to preempt first). Nothing else passes between them: a policy keeps no per-step state,
so a step that fails between the two leaves nothing stale. docs/ARCHITECTURE.md shows the
step loop around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from policies.modes import ChunkKind
from policies.option import Option
from policies.request_view import RequestView


@dataclass(frozen=True)
class WorkRecord:
    """One request's share of a finished step."""

    request_id: str
    kind: ChunkKind
    option: Option | None  # the mode and block it ran (None for a prefill chunk)
    num_tokens: int  # tokens it put in the batch
    num_emitted: int  # tokens the step produced for it (0: mid-iteration, or a draft pass)

    def __post_init__(self) -> None:
        if (self.option is None) != (self.kind is ChunkKind.PREFILL):
            raise ValueError(f"{self.request_id}: a {self.kind} work with option {self.option}")
        if self.num_tokens < 1 or self.num_emitted < 0:
            raise ValueError(f"{self.request_id}: {self.num_tokens} tokens, "
                             f"{self.num_emitted} emitted")


@dataclass(frozen=True)
class StepRecord:
    """What one step ran and how long it took (schedule + forward, wall seconds)."""

    num_tokens: int
    num_requests: int
    seconds: float
    works: tuple[WorkRecord, ...] = ()  # requests still live when the step ended

    def __post_init__(self) -> None:
        if self.num_tokens < 1 or self.num_requests < 1 or self.seconds < 0:
            raise ValueError(f"a step of {self.num_tokens} tokens, {self.num_requests} "
                             f"requests, {self.seconds} s")

    @property
    def num_prefill_tokens(self) -> int:
        return sum(w.num_tokens for w in self.works if w.kind is ChunkKind.PREFILL)

    @property
    def num_prefill_requests(self) -> int:
        return sum(1 for w in self.works if w.kind is ChunkKind.PREFILL)


@dataclass(frozen=True)
class SchedulerView:
    running: tuple[RequestView, ...]
    waiting: tuple[RequestView, ...]  # in arrival order (preempted requests first)
    max_batch_tokens: int
    max_num_seqs: int
    max_prefill_chunk: int
    last_step: StepRecord | None = None  # the step since the previous view, if one ran
    retired: tuple[str, ...] = ()  # ids that left since the previous view: finished, aborted

    @property
    def requests(self) -> tuple[RequestView, ...]:
        return self.running + self.waiting


@dataclass(frozen=True)
class BatchDecision:
    order: tuple[str, ...]  # every running and waiting request, most urgent first
    # Every request's option for the case that it starts an iteration this step (one about to
    # prefill may not: a one-token prompt, or a prompt found whole in the prefix cache).
    options: Mapping[str, Option]
    deferred: frozenset[str] = frozenset()  # decoders that sit this step out if others run
    victims: tuple[str, ...] = ()  # running requests, preempted first to last if cache is dry
    # The diffusion commit threshold for a request that starts a diffusion block this step,
    # where the policy chooses it (else the request's own).
    thresholds: Mapping[str, float] = field(default_factory=dict)
    # Waiting requests that do not start this step (policies/pace_gate.py); the scheduler
    # starts them anyway when nothing else would run.
    held: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if len(set(self.order)) != len(self.order):
            raise ValueError("BatchDecision.order names a request twice")
        if not self.deferred <= self.options.keys():
            raise ValueError("a deferred request needs an option too (it runs if no one else "
                             "can)")
        bad = [k for k, t in self.thresholds.items() if not 0.0 < t <= 1.0]
        if bad:
            raise ValueError(f"BatchDecision.thresholds: {bad[:3]} outside (0, 1]")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "thresholds", MappingProxyType(dict(self.thresholds)))
