"""The replica's side of the engine's requests: which JobStream each engine request feeds,
and the fan-out of one step's deltas (one list for all of the replica's requests) to them.
Event-loop only; the engine runs elsewhere (a thread or the engine-core process).

Streams are released together, on one replica-wide tick: a step's events are queued on their
streams, and the streams are woken (their callers write one chunk each) at most every
`interval_s`, all in the same event-loop turn, instead of each stream keeping a timer of its
own. A job with an interval of its own (GenerateJob.stream_interval_ms: batch jobs) keeps
its own clock instead. A stream's first tokens, its end and errors are released at once.
Events never wait for a later tick than the next step's: a stream with queued events is
unfinished, so the engine keeps stepping.

The tick stretches with load (StreamPacing): a replica sends at most `max_chunks_per_s`
chunks a second in all, so with many streams each one's chunks carry more tokens. A chunk
costs CPU in the replica, the Serve proxy and the client whatever it carries (one Ray
message, one SSE write, one parse); tokens per second do not."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.job import ChoiceEvent, GenerateJob, JobError
from cluster.metrics import ServerMetrics
from cluster.request_state import ChoiceState, JobStream
from cluster.step_delta import StepDelta


@dataclass(frozen=True)
class StreamPacing:
    """How often a replica releases its streams: every `interval_s`, stretched so that it
    sends no more than `max_chunks_per_s` chunks a second over all its streams (0: no cap),
    but stretched no further than `max_interval_s`: with n streams the tick is
    max(interval_s, min(max_interval_s, n / max_chunks_per_s))."""

    interval_s: float = 0.0
    max_chunks_per_s: float = 0.0
    max_interval_s: float = 0.2

    def __post_init__(self) -> None:
        if self.interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {self.interval_s}")
        if self.max_chunks_per_s < 0:
            raise ValueError(f"max_chunks_per_s must be >= 0, got {self.max_chunks_per_s}")
        if self.max_interval_s < 0:
            raise ValueError(f"max_interval_s must be >= 0, got {self.max_interval_s}")

    def tick_s(self, num_streams: int) -> float:
        if not self.max_chunks_per_s:
            return self.interval_s
        return max(self.interval_s,
                   min(self.max_interval_s, num_streams / self.max_chunks_per_s))


class StreamRouter:
    def __init__(self, metrics: ServerMetrics, pacing: StreamPacing | None = None) -> None:
        self.metrics, self.pacing = metrics, pacing or StreamPacing()
        self.choices: dict[str, ChoiceState] = {}  # open engine requests by id
        self._held: dict[int, JobStream] = {}  # streams with events queued, not yet woken
        self._last_release = float("-inf")

    def open(self, job: GenerateJob, added: list[tuple[str, int]], arrival: float
             ) -> JobStream:
        stream = JobStream(job, arrival)
        for spec, (rid, num_prompt) in zip(job.choices, added, strict=True):
            choice = ChoiceState(stream, spec.index, rid, num_prompt, arrival)
            stream.choices[rid] = choice
            self.choices[rid] = choice
        return stream

    def close(self, stream: JobStream) -> list[str]:
        """Stop a job's open requests; returns the engine requests to abort."""
        rids = [rid for rid, c in stream.choices.items()
                if not c.is_finished and self.choices.pop(rid, None) is not None]
        self.metrics.observe_aborted(len(rids))
        stream.num_open = 0
        return rids

    def dispatch(self, deltas: list[StepDelta], now: float) -> list[str]:
        """Hand one step's deltas to their streams, one put per stream. Returns engine
        requests to abort (the other choices of a job whose request failed)."""
        batches: dict[int, tuple[JobStream, list[ChoiceEvent]]] = {}
        failed: dict[int, tuple[JobStream, str]] = {}
        for out in deltas:
            choice = self.choices.get(out.request_id)
            if choice is None:
                continue  # aborted while the step ran
            if out.finish_reason == "error":
                del self.choices[out.request_id]
                choice.is_finished = True
                failed[id(choice.stream)] = (choice.stream, out.error or "step failed")
                continue
            event = choice.advance(out, now, self.metrics)
            if out.finished:
                del self.choices[out.request_id]
            batches.setdefault(id(choice.stream), (choice.stream, []))[1].append(event)
        ticked = {k for k, (stream, _) in batches.items() if stream.job.stream_interval_ms is None}
        tick_s = self.pacing.tick_s(len(ticked | self._held.keys()))  # streams on the tick
        is_tick = now - self._last_release >= tick_s
        for stream, events in batches.values():
            own = stream.job.stream_interval_ms
            due = is_tick if own is None else now - stream.released_at >= own / 1e3
            urgent = stream.num_open == 0 or (not stream.has_output and any(
                e.token_ids for e in events))
            stream.put(events, wake=urgent or due)
            if urgent or due:
                stream.released_at = now
            elif own is None:
                self._held[id(stream)] = stream
        if is_tick:
            for stream in self._held.values():
                stream.wake()
            self._held.clear()
            self._last_release = now
        aborts = []
        for stream, message in failed.values():  # its other choices stop too
            aborts += self.close(stream)
            stream.put(JobError(500, f"engine step failed: {message}", None, "server_error"))
        return aborts

    def fail_all(self, error: JobError) -> list[str]:
        """End every open job with error; returns the engine requests to abort."""
        streams = {id(c.stream): c.stream for c in self.choices.values()}
        rids = list(self.choices)
        self.choices.clear()
        for stream in streams.values():
            stream.num_open = 0
            stream.put(error)
        return rids
