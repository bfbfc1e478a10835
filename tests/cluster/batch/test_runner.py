"""The job loop keeps as many requests in flight as the pacer's window says: behind schedule
more (up to the cap), on schedule the base. The answers come from a stand-in for the model
server that takes a fixed time per request, so tokens per second grow with the requests in
flight, as they do on a real replica (BENCHMARKS.md, "Batch jobs")."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cluster.batch.adapter import Answer, Steering
from cluster.batch.journal import ResultWriter
from cluster.batch.lines import BatchLine
from cluster.batch.pacer import Pacer, PacerConfig
from cluster.batch.progress import Progress
from cluster.batch.runner import JobRunner, RunOptions

TOKENS = 10  # per request
SECONDS = 0.04  # per request, however many are in flight


class Server:
    """Answers each request after SECONDS, its tokens streamed half-way and at the end."""

    def __init__(self) -> None:
        self.in_flight = self.most = 0

    async def answer(self, line: BatchLine, steer: Steering, produced) -> Answer:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        for _ in range(2):
            await asyncio.sleep(SECONDS / 2)
            produced(TOKENS // 2)
        self.in_flight -= 1
        body = {"usage": {"completion_tokens": TOKENS}}
        return Answer(f"r-{line.custom_id}", 200, body)


def job(tmp_path: Path, deadline_s: float, num: int = 60, cap: int = 8,
        strict: bool = False, said: list[str] | None = None) -> tuple[Server, JobRunner]:
    server = Server()
    lines = [BatchLine(i + 1, f"q{i}", "/v1/completions", {"max_tokens": TOKENS})
             for i in range(num)]
    pacer = Pacer(deadline_s, num * TOKENS, window=1, max_window=cap,
                  config=PacerConfig(margin=1.0, min_horizon_s=0.1),
                  gain=lambda w: cap / w)  # what more in flight buys here
    say = (said if said is not None else []).append
    runner = JobRunner(server, None, pacer, Progress(num, deadline_s, False),  # type: ignore[arg-type]
                       RunOptions(strict_deadline=strict), say=say)
    with ResultWriter(tmp_path / f"out{deadline_s}-{strict}.jsonl") as writer:
        runner.writer = writer
        asyncio.run(runner.run(lines))
    return server, runner


def test_behind_more_in_flight_on_schedule_the_base(tmp_path: Path) -> None:
    # One at a time: 60 x 0.04 s = 2.4 s. A 0.6 s deadline needs ~4 in flight.
    said: list[str] = []
    server, runner = job(tmp_path, 0.6, said=said)
    pacer = runner.pacer
    assert said and all(x.startswith("measured") for x in said)  # its projections
    assert runner.tally.num_done == 60 and pacer.elapsed() < 1.5  # one at a time: 2.4 s
    assert server.most >= 4 and pacer.max_window_used >= 4
    assert pacer.moves[0].endswith("2 in flight")
    server, runner = job(tmp_path, 30.0, num=20)  # generous: the base throughout
    assert runner.tally.num_done == 20 and server.most == 1 and runner.pacer.moves == []


def test_a_pace_measured_late_is_said_and_stops_a_strict_job(tmp_path: Path) -> None:
    # One in flight at most: 30 x 0.04 s = 1.2 s against a 0.5 s deadline, no lever left.
    said: list[str] = []
    _, runner = job(tmp_path, 0.5, num=30, cap=1, said=said)
    assert runner.tally.num_done == 30 and not runner.stopped_late  # best-effort: all ran
    assert said and all("past the deadline" in x and "best-effort" in x for x in said)
    _, runner = job(tmp_path, 0.5, num=30, cap=1, strict=True)
    assert runner.stopped_late and 0 < runner.tally.num_done < 15  # stopped after ~0.2 s
