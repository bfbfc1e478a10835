"""The job loop: as many requests in flight through the adapter as the pacer's window says
(it moves between the job's base and cap: pacer.py), each given its share of the deadline
and its mode when it is sent (its tokens, as they stream back, are the pacer's measure of
progress); each answer is written (appended, fsynced) the moment it comes, in the order
they finish. Serve's handle routes the requests over the
replicas and the engine's SLO scheduler orders and paces them: nothing here queues work
beyond the window."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cluster.batch.adapter import Adapter, Answer, Steering
from cluster.batch.estimate import planned_tokens
from cluster.batch.journal import ResultWriter
from cluster.batch.lines import BatchLine
from cluster.batch.pacer import Pacer
from cluster.batch.progress import Progress, Tally

STEER_INTERVAL_S = 0.25  # the pacer is asked this often while the window is full


@dataclass(frozen=True)
class RunOptions:
    priority: int = -1
    retries: int = 2  # more tries for an answer that is a server-side failure
    chat_max_tokens: int = 256  # a chat body's max_tokens when it sets none (the config's)
    strict_deadline: bool = False  # stop sending when the measured pace is late (pacer.py)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.chat_max_tokens < 1:
            raise ValueError(f"chat_max_tokens must be >= 1, retries >= 0: {self}")


def result_line(line: BatchLine, answer: Answer) -> dict[str, Any]:
    """An OpenAI Batch output line."""
    response = None
    if answer.status_code is not None:
        response = {"status_code": answer.status_code, "request_id": answer.request_id,
                    "body": answer.body}
    return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": line.custom_id,
            "response": response, "error": answer.error}


class JobRunner:
    def __init__(self, adapter: Adapter, writer: ResultWriter | None, pacer: Pacer,
                 progress: Progress, options: RunOptions,
                 on_result: Callable[[BatchLine, Answer], None] | None = None,
                 say: Callable[[str], None] = lambda text: None) -> None:
        self.adapter, self.writer, self.pacer = adapter, writer, pacer
        self.progress, self.options = progress, options
        self.on_result, self.say = on_result, say
        self.tally = Tally()
        self.stopped_late = False  # --strict-deadline and the measured pace was late
        self._said_checks = 0  # the pacer's projections said so far

    async def run(self, todo: Sequence[BatchLine]) -> Tally:
        tasks: set[asyncio.Task] = set()
        failures: list[BaseException] = []

        def finished(task: asyncio.Task) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # type: ignore[arg-type]

        try:
            for line in todo:
                self.pacer.steer()
                while len(tasks) >= self.pacer.window and not failures:
                    # a slot frees, or the pacer raises the window
                    await asyncio.wait(set(tasks), timeout=STEER_INTERVAL_S,
                                       return_when=asyncio.FIRST_COMPLETED)
                    self.pacer.steer()
                if failures:
                    raise failures[0]
                if self._is_late():
                    break
                task = asyncio.create_task(self._one(line))
                tasks.add(task)
                task.add_done_callback(finished)
            while tasks and not failures:
                await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
            if failures:
                raise failures[0]
        finally:
            for task in tasks:  # Ctrl-C or an error: abort what is in flight
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        return self.tally

    def _is_late(self) -> bool:
        """Said each time the pacer projects the job's end from its measured pace (after its
        first horizon, and once the fast option was measured) against the deadline; True:
        late under --strict-deadline, stop sending."""
        best, late = self.pacer.best_s, self.pacer.late_s
        if best is None or self._said_checks == self.pacer.num_checks:
            return self.stopped_late
        self._said_checks = self.pacer.num_checks
        text = (f"measured {self.pacer.rate() or 0:.0f} tokens/s at {self.pacer.window} in "
                f"flight: with the levers left the job ends at ~{best:.0f} s, deadline "
                f"{self.pacer.deadline_s:.0f} s: ")
        if late is None:
            self.say(text + "on pace")
            return False
        self.say(text + "past the deadline; " + (
            "stopping (--strict-deadline): what finished is written, rerun to resume"
            if self.options.strict_deadline else "running best-effort"))
        self.stopped_late = self.options.strict_deadline
        return self.stopped_late

    async def _one(self, line: BatchLine) -> None:
        planned = planned_tokens(line.kind, line.body, self.options.chat_max_tokens)
        streamed = 0

        def produced(num_tokens: int) -> None:  # tokens as they stream: the pacer's progress
            nonlocal streamed
            streamed += num_tokens
            self.pacer.produced(num_tokens)

        for attempt in range(self.options.retries + 1):
            steer = Steering(self.options.priority, self.pacer.deadline_ms(planned),
                             self.pacer.option())
            answer = await self.adapter.answer(line, steer, produced)
            if not answer.is_transient or attempt == self.options.retries:
                break
            self.tally.num_retries += 1
        assert self.writer is not None, "JobRunner.writer is set before run()"
        self.writer.append(result_line(line, answer))
        self.tally.add(answer)
        self.pacer.settle(planned, answer.num_output_tokens, streamed)
        self.progress.update(self.tally, self.pacer.elapsed(), self.pacer.projected_s())
        if self.on_result is not None:
            self.on_result(line, answer)

