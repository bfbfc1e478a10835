"""What the engine loop remembers of a job while it runs: one JobStream per HTTP request
(its queue of events), one ChoiceState per engine request (text sent, timings)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from cluster.job import ChoiceEvent, ChoiceStats, GenerateJob, JobError, TokenLogprob
from cluster.metrics import ServerMetrics
from cluster.slo import Latency, verdicts
from engine.engine import RequestOutput


@dataclass(eq=False)
class JobStream:
    job: GenerateJob
    arrival: float
    choices: dict[str, ChoiceState] = field(default_factory=dict)
    num_open: int = field(init=False)  # choices not finished yet
    pending: deque[list[ChoiceEvent] | JobError] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.num_open = len(self.job.choices)

    def put(self, item: list[ChoiceEvent] | JobError) -> None:
        self.pending.append(item)
        self.ready.set()

    @property
    def has_pending(self) -> bool:
        return bool(self.pending)

    def take_more(self, item: list[ChoiceEvent] | JobError) -> list[ChoiceEvent] | JobError:
        """item plus the event lists queued behind it (not an error)."""
        while isinstance(item, list) and self.pending and isinstance(self.pending[0], list):
            item = item + self.pending.popleft()  # type: ignore[operator]
        return item

    async def get(self) -> list[ChoiceEvent] | JobError:
        """Everything queued since the last get as one item (steps that piled up while the
        caller was busy travel as one Ray message); an error alone, after what came before."""
        while not self.pending:
            self.ready.clear()
            await self.ready.wait()
        return self.take_more(self.pending.popleft())

    @property
    def num_prompt_tokens(self) -> tuple[int, ...]:
        return tuple(len(c.prompt_ids) for c in self.choices.values())


@dataclass(eq=False)
class ChoiceState:
    stream: JobStream
    index: int
    request_id: str
    prompt_ids: list[int]
    arrival: float
    started: float | None = None  # start of the first step that ran it
    first_token: float | None = None
    last_token: float | None = None
    text: str = ""  # sent so far
    is_finished: bool = False

    def advance(self, out: RequestOutput, logprobs: list[TokenLogprob] | None, now: float,
                metrics: ServerMetrics) -> ChoiceEvent:
        """The event for one step's output: new text and tokens, stats when finished."""
        delta = out.text[len(self.text):] if out.text.startswith(self.text) else ""
        self.text += delta
        n = len(out.new_token_ids)
        if n:
            is_first = self.first_token is None
            gap = now - (self.last_token or self.arrival)
            metrics.observe_tokens(gap, n, is_first, now - self.arrival)
            self.first_token = self.first_token or now
            self.last_token = now
        event = ChoiceEvent(self.index, delta, list(out.new_token_ids), logprobs)
        if out.finished:
            self._finish(out, event, now, metrics)
        return event

    def _finish(self, out: RequestOutput, event: ChoiceEvent, now: float,
                metrics: ServerMetrics) -> None:
        self.is_finished = True
        self.stream.num_open -= 1
        event.finish_reason = out.finish_reason or "stop"
        event.stats = ChoiceStats(
            out.num_prompt_tokens, len(out.token_ids), out.seed, out.num_forwards,
            dict(out.modes), dict(out.tokens_by_mode), dict(out.accepted_by_mode),
            dict(out.drafted_by_mode), dict(out.forwards_by_block))
        n = len(out.token_ids)
        tpot = None
        if n > 1 and self.first_token is not None and self.last_token is not None:
            tpot = (self.last_token - self.first_token) / (n - 1)
        ttft = None if self.first_token is None else self.first_token - self.arrival
        latency = Latency(ttft, tpot, now - self.arrival)
        job = self.stream.job
        metrics.observe_finished(event.stats, event.finish_reason, job.decode.mode.value,
                                 latency, verdicts(job.slo, latency))
