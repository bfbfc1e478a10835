"""What one engine step means for one request, in the few plain values the server needs:
new tokens and text, logprobs, and the request's statistics once it ends. It crosses from the
engine (a thread or the engine-core process) to the replica's event loop, one list per step
for all of the replica's requests."""

from __future__ import annotations

from typing import NamedTuple

from cluster.job import ChoiceStats
from engine.engine import RequestOutput
from engine.logprobs import TokenLogprob


class StepDelta(NamedTuple):
    request_id: str
    new_token_ids: list[int]
    text: str  # text this step made safe to show
    finished: bool
    finish_reason: str | None
    scheduled_time: float | None  # time.monotonic() of the first step that ran it
    logprobs: list[TokenLogprob] | None
    error: str | None  # set when finish_reason is "error"
    stats: ChoiceStats | None  # set when finished

    @staticmethod
    def of(out: RequestOutput) -> StepDelta:
        stats = None
        if out.finished:
            stats = ChoiceStats(out.num_prompt_tokens, len(out.token_ids), out.seed,
                                out.num_forwards, dict(out.modes), dict(out.tokens_by_mode),
                                dict(out.accepted_by_mode), dict(out.drafted_by_mode),
                                dict(out.forwards_by_block))
        return StepDelta(out.request_id, out.new_token_ids, out.delta_text, out.finished,
                         out.finish_reason, out.scheduled_time, out.logprobs, out.error, stats)
