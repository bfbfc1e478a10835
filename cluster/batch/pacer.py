"""The job's deadline as each request's SLO and mode: a controller on the job's measured
progress. Plain Python.

It measures continuously: output tokens as they stream back (`produced`), the job's tokens
per second over the last `horizon` seconds, and the tokens still to make (every unfinished
request to its max_tokens; a finished one counts what it made, `settle`). Their ratio is
the pressure: the rate the deadline needs (tokens left / time left to `margin` of the
deadline) over the rate measured. Before the first tokens come, the start-up estimate's
pressure stands in (estimate.py: the AR estimate over the time to the deadline).

- Pressure <= 1, ahead: auto requests run AR, the least device work per token.
- Pressure > 1, behind (until it falls under 1 - `hysteresis`): auto requests run the
  lossless option predicted fastest per request at the job's window (`choose`:
  estimate.fastest_option, from the step-cost profile and AR's time per token as measured
  while the job ran AR); none known: auto, the scheduler's choice. Two horizons into its
  first stretch behind, the job compares: if the fast option's measured time per token is
  not under `FAST_GAIN` x AR's, it runs AR for the rest (speculation costs 3-7x the device
  work per token; on this project's 2-core CPU at T = 0.8 it was no faster: BENCHMARKS.md).

Each request carries its share of the time left as its SLO deadline (its max_tokens x
`window` in flight / the tokens left; all of the time left once the rest fit in one
window): the scheduler orders, defers and preempts by it. Why the mode is named rather than
left to the SLO scheduler to buy with a shorter deadline: the scheduler predicts only its
steps, and a request here took ~3x its predicted step per token (bench/batch.py deadline).
On the CPU profile at 4 in flight AR is predicted at 11.6 ms a token and the fastest
speculation at 9.7 ms, so a deadline that makes AR miss in the scheduler's eyes had expired
in real time a few tokens in; the scheduler then gives the request up as lost and runs it
at AR, the opposite of what a job behind needs (BENCHMARKS.md, "Batch jobs"). The requests
are best-effort: a share too short for any mode is run, not refused.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cluster.slo import MAX_SLO_MS
from policies.option import AR1, Option

FAST_GAIN = 0.95  # the fast option must take at most this share of AR's time per token


@dataclass(frozen=True)
class PacerConfig:
    margin: float = 0.9  # aim at this share of the deadline
    hysteresis: float = 0.05  # behind above pressure 1, ahead again below 1 - this

    def __post_init__(self) -> None:
        if not 0 < self.margin <= 1 or not 0 <= self.hysteresis < 1:
            raise ValueError(f"bad pacer config {self}")


class Pacer:
    def __init__(self, deadline_s: float | None, num_tokens: int, window: int,
                 estimate_s: float | None = None,
                 choose: Callable[[float | None], Option] | None = None,
                 config: PacerConfig = PacerConfig(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        """num_tokens: the job's output tokens at most (max_tokens summed); estimate_s: the
        start-up estimate of the job's time at AR (None: unknown); choose: AR's measured
        seconds per token per request (None: not measured) -> the option for a job behind
        (None: auto)."""
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError(f"deadline must be > 0 s, got {deadline_s}")
        if window < 1 or num_tokens < 0:
            raise ValueError(f"window must be >= 1 and num_tokens >= 0: {window}, {num_tokens}")
        self.deadline_s, self.window, self.choose = deadline_s, window, choose
        self.fast = choose(None) if choose is not None else None
        self.ar_s_per_token: float | None = None  # measured while the job runs AR
        self.config, self.clock = config, clock
        self.start = clock()
        self.num_tokens = num_tokens  # to make in all: planned, less what finished short
        self.num_done = 0  # tokens made so far
        target = (deadline_s or 0.0) * config.margin
        self.horizon_s = min(60.0, max(2.0, 0.05 * target))  # the rate's window
        self.initial = 0.0 if estimate_s is None or not target else estimate_s / target
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) within horizon
        self.is_behind = self.initial > 1.0
        self.num_switches = 0  # times it went from ahead to behind or back
        self.behind_since = self.start
        self.fast_pays: bool | None = None  # measured: the fast option beats AR here

    def elapsed(self) -> float:
        return self.clock() - self.start

    # --- what is measured ------------------------------------------------------------------

    def produced(self, num_tokens: int) -> None:
        """Tokens streamed back just now."""
        self.num_done += num_tokens
        self._recent.append((self.clock(), num_tokens))

    def settle(self, planned: int, made: int, streamed: int) -> None:
        """A request ended: it was planned at `planned` tokens, made `made` (0 if refused or
        failed), and `streamed` of its tokens were counted as they came."""
        self.num_done += made - streamed
        self.num_tokens += made - planned

    def rate(self) -> float | None:
        """Tokens per second over the last horizon (since the start, while younger); None
        before the first tokens."""
        now = self.clock()
        while self._recent and self._recent[0][0] <= now - self.horizon_s:
            self._recent.popleft()
        if self.num_done <= 0:
            return None
        span = min(self.horizon_s, now - self.start)
        return sum(n for _, n in self._recent) / max(span, 1e-3)

    def needed_rate(self) -> float:
        left = self.deadline_s * self.config.margin - self.elapsed() if self.deadline_s else 0
        remaining = max(0, self.num_tokens - self.num_done)
        return math.inf if left <= 0 else remaining / left

    def pressure(self) -> float:
        """The rate needed over the rate measured: > 1 behind (0 without a deadline)."""
        if self.deadline_s is None:
            return 0.0
        rate, need = self.rate(), self.needed_rate()
        if rate is None:
            return self.initial if need < math.inf else math.inf
        return need / rate if rate > 0 else math.inf

    # --- what it steers --------------------------------------------------------------------

    def deadline_ms(self, planned: int) -> float | None:
        """The SLO deadline of a request of `planned` tokens at most, sent now (None: no job
        deadline)."""
        if self.deadline_s is None:
            return None
        left = self.deadline_s * self.config.margin - self.elapsed()
        remaining = max(1, self.num_tokens - self.num_done)
        share = left * min(1.0, planned * self.window / remaining)
        return min(max(share * 1e3, 1.0), MAX_SLO_MS)

    def option(self) -> Option | None:
        """The option of an auto request sent now: AR ahead, `fast` behind, None (auto)
        without a deadline or a fast option."""
        if self.deadline_s is None:
            return None
        p, rate, was, now = self.pressure(), self.rate(), self.is_behind, self.clock()
        if not was and rate:
            self.ar_s_per_token = self.window / rate  # AR, as measured so far
        if p > 1.0:
            self.is_behind = True
        elif p < 1.0 - self.config.hysteresis:
            self.is_behind = False
        if self.is_behind and not was:
            self.num_switches += 1
            self.behind_since = now
            if self.choose is not None and self.fast_pays is not False:
                self.fast = self.choose(self.ar_s_per_token)
        self.num_switches += was and not self.is_behind
        if (was and self.is_behind and rate and self.fast_pays is None
                and self.ar_s_per_token is not None
                and now - self.behind_since >= 2 * self.horizon_s):
            # A horizon of the fast option alone: no faster than AR was, it is not worth
            # its device work for the rest of the job.
            self.fast_pays = self.window / rate < self.ar_s_per_token * FAST_GAIN
        if not self.is_behind or self.fast_pays is False:
            return AR1
        return self.fast

    def projected_s(self) -> float | None:
        """When the job will end at the measured rate (seconds from the start)."""
        rate = self.rate()
        if not rate:
            return None
        return self.elapsed() + max(0, self.num_tokens - self.num_done) / rate
