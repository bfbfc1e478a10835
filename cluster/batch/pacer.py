"""The job's deadline, as each request's SLO, and the start-up estimate. Plain Python.

Pacing: with `window` requests in flight and `remaining` not finished, each new request
gets its share, time left x window / remaining (all of the time left once the rest fit in
one window), aimed at `margin` of the deadline. A job ahead of schedule hands out long
deadlines, which AR, the least device work per token, meets; a job behind hands out short
ones, and the SLO scheduler (policies/selector.py) buys them with speculation. The
requests are best-effort, so a share too short for any mode is run, not refused.

The share alone trusts the engine's own clock, and the engine predicts only its steps: on
a busy 2-core box the time between steps (the replica's event loop, Ray's streaming, other
processes) made a request take ~3x the predicted step time per token (bench/batch.py
deadline, 2026-12-03), so a job fell behind while every share still looked easy for AR.
The pacer therefore also closes the loop on the job's real progress: while it is `behind`
windows behind the schedule (finished requests against a straight line from 0 to all of
them at the target time, less one window: requests finish in waves), the share is
multiplied by exp(-behind).

Least work while ahead: the selector also spends spare compute on speed (its pass 3: at
small batches speculation raises tokens per second), which a batch job on schedule does not
need. So while the job is not behind, `is_ahead`, its auto requests run AR; behind, they
run auto with the shrunk share, and the selector picks what meets it.

Estimate: how long the job takes with each lossless option, from the machine's step-cost
profile (bench/slo_profile.json: policies/cost_model.py) and the profile's tokens per
forward, with `window` requests decoding together on each replica and every request
running to its max_tokens (an upper bound: EOS ends many sooner).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from policies.cost_model import CostModel
from policies.option import AR1, CANDIDATES, Option
from policies.profile import Profile

CHARS_PER_TOKEN = 3.0  # a text prompt's size before tokenizing (the estimate only)


@dataclass(frozen=True)
class Workload:
    num_requests: int
    num_prompt_tokens: int  # estimated for text prompts
    num_output_tokens: int  # max_tokens summed: an upper bound

    def __post_init__(self) -> None:
        if min(self.num_requests, self.num_prompt_tokens, self.num_output_tokens) < 0:
            raise ValueError(f"negative workload {self}")


def workload_of(bodies: Iterable[tuple[str, dict[str, Any]]], chat_max_tokens: int
                ) -> Workload:
    """(kind, body) pairs -> their size; bodies that will be refused count as they stand."""
    num = prompt = output = 0
    for kind, body in bodies:
        num += 1
        n = body.get("n", 1) if isinstance(body.get("n", 1), int) else 1
        if kind == "completion":
            prompt += _prompt_tokens(body.get("prompt"))
            mt = body.get("max_tokens", 16)
        else:
            msgs = body.get("messages")
            prompt += sum(_prompt_tokens(m.get("content")) for m in msgs
                          if isinstance(m, dict)) if isinstance(msgs, list) else 0
            mt = body.get("max_completion_tokens") or body.get("max_tokens") or chat_max_tokens
        output += max(1, mt if isinstance(mt, int) else 16) * max(1, n)
    return Workload(num, prompt, output)


def _prompt_tokens(p: Any) -> int:
    if isinstance(p, str):
        return max(1, math.ceil(len(p) / CHARS_PER_TOKEN))
    if isinstance(p, list) and p and all(isinstance(x, int) for x in p):
        return len(p)
    if isinstance(p, list):
        return sum(_prompt_tokens(x) if not isinstance(x, dict) else
                   _prompt_tokens(x.get("text")) for x in p)
    return 0


def estimate(profile: Profile, work: Workload, window: int, num_replicas: int = 1,
             prefill_chunk: int = 1024) -> dict[Option, float]:
    """Seconds for the whole job under each lossless option (AR and the auto candidates)."""
    cost = CostModel(profile.cost)
    tpf = {AR1: 1.0, **profile.tokens_per_forward()}
    per_replica = max(1, num_replicas)
    prompt = work.num_prompt_tokens / per_replica
    output = work.num_output_tokens / per_replica
    batch = max(1, min(window, math.ceil(work.num_requests / per_replica)))
    prefill = 0.0
    while prompt > 0:
        n = min(prompt, prefill_chunk)
        prefill += cost.predict(int(math.ceil(n)), 1)
        prompt -= n
    out = {}
    for option in (AR1, *CANDIDATES):
        if not option.is_lossless or option not in tpf:
            continue
        step = cost.predict(batch * option.work_tokens, batch)
        out[option] = prefill + output / (batch * tpf[option]) * step
    return out


class Pacer:
    def __init__(self, deadline_s: float | None, num_requests: int, window: int,
                 margin: float = 0.9, clock: Callable[[], float] = time.monotonic) -> None:
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError(f"deadline must be > 0 s, got {deadline_s}")
        if window < 1 or not 0 < margin <= 1:
            raise ValueError(f"window must be >= 1 and margin in (0, 1]: {window}, {margin}")
        self.deadline_s, self.num_requests, self.window = deadline_s, num_requests, window
        self.margin, self.clock = margin, clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def deadline_ms(self, num_finished: int) -> float | None:
        """The SLO deadline of a request submitted now (None: no job deadline)."""
        if self.deadline_s is None:
            return None
        left = self.deadline_s * self.margin - self.elapsed()
        remaining = max(1, self.num_requests - num_finished)
        share = left * min(1.0, self.window / remaining) * math.exp(-self.behind(num_finished))
        return min(max(share * 1e3, 1.0), 3_600_000.0)  # SLOSpec's bounds: (0, 1 h]

    def behind(self, num_finished: int) -> float:
        """Windows of requests behind the schedule, beyond the one window that is always
        in flight (0 when on time or ahead)."""
        if self.deadline_s is None:
            return 0.0
        due = self.num_requests * min(1.0, self.elapsed() / (self.deadline_s * self.margin))
        return max(0.0, (due - num_finished) / self.window - 1.0)

    def is_ahead(self, num_finished: int) -> bool:
        """On schedule with a deadline: the cheapest mode will do."""
        return self.deadline_s is not None and self.behind(num_finished) == 0.0

    def projected_s(self, num_finished: int) -> float | None:
        """When the job will end at the pace so far (seconds from the start)."""
        if num_finished <= 0:
            return None
        return self.elapsed() * self.num_requests / num_finished
