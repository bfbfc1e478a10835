"""What the engine loop remembers of a job while it runs: one JobStream per HTTP request
(its queue of events), one ChoiceState per engine request (timings, finished or not)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from cluster.job import ChoiceEvent, GenerateJob, JobError
from cluster.metrics import ServerMetrics
from cluster.slo import Latency, usage, verdicts
from cluster.step_delta import StepDelta


@dataclass(eq=False)
class JobStream:
    job: GenerateJob
    arrival: float
    choices: dict[str, ChoiceState] = field(default_factory=dict)
    num_open: int = field(init=False)  # choices not finished yet
    pending: deque[list[ChoiceEvent] | JobError] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    has_output: bool = False  # a caller has been woken for tokens of this stream
    num_released: int = 0  # the first num_released items of pending may be taken
    released_at: float = float("-inf")  # when the router last woke the caller

    def __post_init__(self) -> None:
        self.num_open = len(self.job.choices)

    def put(self, item: list[ChoiceEvent] | JobError, wake: bool = True) -> None:
        """Queue item; wake the caller now (an error always does) or at the next wake()."""
        self.pending.append(item)
        if wake or isinstance(item, JobError):
            self.wake()

    def wake(self) -> None:
        """Release everything queued so far to the caller."""
        self.has_output = self.has_output or any(
            isinstance(i, JobError) or any(e.token_ids for e in i) for i in self.pending)
        self.num_released = len(self.pending)
        self.ready.set()

    @property
    def has_pending(self) -> bool:
        return bool(self.pending)

    async def get(self) -> list[ChoiceEvent] | JobError:
        """Everything queued by the time the caller is woken, as one item (steps that piled
        up travel as one chunk); an error alone, after what came before it."""
        while not self.num_released:
            self.ready.clear()
            await self.ready.wait()
        item = self.pending.popleft()
        self.num_released -= 1
        while isinstance(item, list) and self.num_released and isinstance(self.pending[0], list):
            item = item + self.pending.popleft()
            self.num_released -= 1
        return item

    @property
    def num_prompt_tokens(self) -> tuple[int, ...]:
        return tuple(c.num_prompt_tokens for c in self.choices.values())


@dataclass(eq=False)
class ChoiceState:
    stream: JobStream
    index: int
    request_id: str
    num_prompt_tokens: int
    arrival: float
    started: float | None = None  # start of the first step that ran it
    first_token: float | None = None
    last_token: float | None = None
    is_finished: bool = False

    def advance(self, out: StepDelta, now: float, metrics: ServerMetrics) -> ChoiceEvent:
        """The event for one step's output: new text and tokens, stats when finished."""
        if self.started is None and out.scheduled_time is not None:
            self.started = out.scheduled_time
            metrics.observe_queue(self.started - self.arrival)
        n = len(out.new_token_ids)
        if n:
            is_first = self.first_token is None
            gap = now - (self.last_token or self.arrival)
            metrics.observe_tokens(gap, n, is_first, now - self.arrival)
            self.first_token = self.first_token or now
            self.last_token = now
        event = ChoiceEvent(self.index, out.text, out.new_token_ids, out.logprobs)
        if out.finished:
            self._finish(out, event, now, metrics)
        return event

    def _finish(self, out: StepDelta, event: ChoiceEvent, now: float,
                metrics: ServerMetrics) -> None:
        self.is_finished = True
        self.stream.num_open -= 1
        event.finish_reason = out.finish_reason or "stop"
        event.stats = out.stats
        n = out.stats.num_completion_tokens if out.stats else 0
        tpot = None
        if n > 1 and self.first_token is not None and self.last_token is not None:
            tpot = (self.last_token - self.first_token) / (n - 1)
        ttft = None if self.first_token is None else self.first_token - self.arrival
        latency = Latency(ttft, tpot, now - self.arrival)
        job = self.stream.job
        if event.stats is not None:
            metrics.observe_finished(event.stats, event.finish_reason, job.decode.mode.value,
                                     latency, verdicts(job.slo, latency),
                                     usage(job.slo, latency))
