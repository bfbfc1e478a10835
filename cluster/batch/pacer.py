"""The job's deadline as each request's SLO, its mode and the job's requests in flight: a
controller on the job's measured progress. Plain Python.

It measures continuously: output tokens as they stream back (`produced`), the job's tokens
per second over the last `horizon` seconds, and the tokens still to make (every unfinished
request to its max_tokens; a finished one counts what it made, `settle`). Their ratio is
the pressure: the rate the deadline needs (tokens left / time left to `margin` of the
deadline) over the rate measured. Before the first tokens come, the start-up estimate's
pressure stands in (estimate.py).

Two levers, the cheaper first, one move at most per horizon (`steer`: the rate must be
measured at the new setting before the next move):
- Requests in flight (`window`), from the job's base up to its cap (`--window`,
  `--max-in-flight`). More in flight buys tokens per second for no more device work per
  token (a step of 16 requests costs ~1.6x a step of 4 on the CPU profile). Behind: double
  it, up to the cap; well ahead (pressure under `lower_below`, so that half the window
  still keeps pace): halve it, down to the base.
- Speculation, once the window is at its cap and the job is still behind: auto requests run
  the lossless option predicted fastest per request at the cap (`choose`:
  estimate.fastest_option, from the step-cost profile and AR's time per token as measured at
  the cap over a full horizon: a job starts at AR even when the estimate says AR is late,
  to have that reference); none known: auto, the scheduler's choice. A horizon after
  the switch the job compares: if the fast option's measured time per token is not under
  `FAST_GAIN` x AR's, it runs AR for the rest (speculation costs 3-7x the device work per
  token; on this project's 2-core CPU it pays at 1 in flight and not at 4 or more:
  bench/batch_modes.py, BENCHMARKS.md). Ahead again: AR first (once AR as measured would
  keep pace), then fewer in flight.

Each request carries its share of the time left as its SLO deadline (its max_tokens x the
window / the tokens left; all of the time left once the rest fit in one window): the
scheduler orders, defers and preempts by it. The mode is named rather than left to the SLO
scheduler to buy with a shorter deadline: the scheduler predicts only its steps, not the
time between them, so a share that makes AR miss in its eyes has often expired in real time
already, and it then gives the request up as lost and runs it at AR (BENCHMARKS.md, "Batch
jobs"). The requests are best-effort: a share too short for any mode is run, not refused.
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
    lower_below: float = 0.4  # halve the window while the pressure is under this (halved,
    # the rate falls by half at most: the pressure stays under 0.8)
    min_horizon_s: float = 2.0  # the rate's window at least (5 % of the deadline, <= 60 s)

    def __post_init__(self) -> None:
        if (not 0 < self.margin <= 1 or not 0 <= self.hysteresis < 1
                or not 0 < self.lower_below < 1 - self.hysteresis
                or self.min_horizon_s <= 0):
            raise ValueError(f"bad pacer config {self}")


class Pacer:
    def __init__(self, deadline_s: float | None, num_tokens: int, window: int,
                 estimate_s: float | None = None,
                 choose: Callable[[float | None], Option] | None = None,
                 config: PacerConfig = PacerConfig(),
                 clock: Callable[[], float] = time.monotonic,
                 max_window: int | None = None, start_window: int | None = None,
                 gain: Callable[[int], float] | None = None) -> None:
        """num_tokens: the job's output tokens at most (max_tokens summed); window: requests
        in flight at least (the base), max_window at most (None: the base), start_window at
        first (None: the base); estimate_s: the start-up estimate of the job's time at AR
        with start_window in flight (None: unknown); choose: AR's measured seconds per token
        per request at the cap (None: not measured) -> the option for a job behind at its
        cap (None: auto); gain: the profile's speed-up from AR at a window to the fastest
        option at the cap (what the levers can still buy; None: no check)."""
        cap = window if max_window is None else max_window
        start = window if start_window is None else start_window
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError(f"deadline must be > 0 s, got {deadline_s}")
        if not 1 <= window <= start <= cap or num_tokens < 0:
            raise ValueError("need 1 <= window <= start_window <= max_window and num_tokens "
                             f">= 0: {window}, {start}, {cap}, {num_tokens}")
        self.deadline_s, self.base, self.cap, self.window = deadline_s, window, cap, start
        self.choose = choose
        self.fast = choose(None) if choose is not None else None
        self.ar_s_per_token: float | None = None  # measured at the cap while the job ran AR
        self.config, self.clock = config, clock
        self.start = self.changed_at = clock()
        self.num_tokens = num_tokens  # to make in all: planned, less what finished short
        self.num_done = 0  # tokens made so far
        target = (deadline_s or 0.0) * config.margin
        self.horizon_s = min(60.0, max(config.min_horizon_s, 0.05 * target))  # the rate's window
        self.initial = 0.0 if estimate_s is None or not target else estimate_s / target
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) within horizon
        self.is_behind = self.initial > 1.0
        # Even when the estimate says AR is late at the cap, the job runs AR for its first
        # horizon: the measured reference the fast option must beat (the start-up estimate
        # comes from a profile that may be stale).
        self.is_speeding = False
        self.fast_pays: bool | None = None  # measured: the fast option beats AR here
        self.moves: list[str] = []  # each lever moved, when: "2.1 s: 8 in flight"
        if start > window:
            self.moves.append(f"0.0 s: {start} in flight (estimate)")
        self.max_window_used = start
        self.gain = gain
        self.best_s: float | None = None  # measured: the end with every lever left
        self.late_s: float | None = None  # best_s, if past the deadline
        self._checked = gain is None
        self.num_checks = 0  # projections made (best_s): runner.py says each

    def elapsed(self) -> float:
        return self.clock() - self.start

    # --- what is measured ------------------------------------------------------------------

    def produced(self, num_tokens: int) -> None:
        """Tokens streamed back just now."""
        now = self.clock()
        if self.num_done == 0 and num_tokens:  # the first: levers wait a horizon from here,
            self.changed_at = now  # so the first rate they act on leaves start-up out
        self.num_done += num_tokens
        self._recent.append((now, num_tokens))

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

    def steer(self) -> None:
        """Move a lever if the job is behind or well ahead (at most one move per horizon)."""
        if self.deadline_s is None:
            return
        p, rate, now = self.pressure(), self.rate(), self.clock()
        if p > 1.0:
            self.is_behind = True
        elif p < 1.0 - self.config.hysteresis:
            self.is_behind = False
        if now - self.changed_at < self.horizon_s or not rate:
            return  # the rate is not yet measured at the present setting
        if not self._checked:  # the first horizon: what the levers left buy, by the profile
            assert self.gain is not None
            self._check(rate, 1.0 if self.is_speeding else max(1.0, self.gain(self.window)))
        if not self.is_speeding and self.window == self.cap:
            self.ar_s_per_token = self.window / rate  # AR at the cap, a full horizon
        if self.is_speeding and self.fast_pays is None and self.ar_s_per_token is not None:
            # A horizon of the fast option at the cap, no faster than AR was there: not
            # worth its device work for the rest of the job.
            self.fast_pays = self.window / rate < self.ar_s_per_token * FAST_GAIN
            if self.gain is not None:  # every lever measured now: check again
                self._check(rate if self.fast_pays else self.window / self.ar_s_per_token, 1.0)
            if not self.fast_pays:
                self._move(speeding=False, why=" (no faster than AR)")
                return
        if self.is_behind and self.window < self.cap:
            self._move(window=min(self.cap, 2 * self.window))
        elif self.is_behind and not self.is_speeding and self.fast_pays is not False:
            if self.choose is not None:
                self.fast = self.choose(self.ar_s_per_token)
            self._move(speeding=True)
        elif not self.is_behind and self.is_speeding:
            # Back to AR only if AR, as measured at the cap, would keep pace (else the two
            # would take turns and average under the pace); unmeasured: well ahead.
            at_ar = (self.needed_rate() * self.ar_s_per_token / self.window
                     if self.ar_s_per_token else p / self.config.lower_below)
            if at_ar < 1.0 - self.config.hysteresis:
                self._move(speeding=False)
        elif p < self.config.lower_below and self.window > self.base:
            self._move(window=max(self.base, self.window // 2))

    def _check(self, rate: float, gain: float) -> None:
        """The end projected at `rate` x `gain` (what the levers left can buy): best_s, and
        late_s if that is past the deadline. On the first horizon measured after the first
        tokens (gain by the profile: the start-up estimate only had the profile), and again
        once the fast option was measured against AR (gain 1)."""
        self._checked = True
        assert self.deadline_s is not None
        self.best_s = self.elapsed() + max(0, self.num_tokens - self.num_done) / (rate * gain)
        self.late_s = self.best_s if self.best_s > self.deadline_s else None
        self.num_checks += 1

    def _move(self, window: int | None = None, speeding: bool | None = None,
              why: str = "") -> None:
        self.changed_at = self.clock()
        if window is not None:
            self.window = window
            self.max_window_used = max(self.max_window_used, window)
            what = f"{window} in flight"
        else:
            self.is_speeding = bool(speeding)
            what = (self.fast.key if self.fast else "auto") if speeding else "AR"
        self.moves.append(f"{self.elapsed():.1f} s: {what}{why}")

    @property
    def num_switches(self) -> int:
        return len(self.moves)

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
        """The option of an auto request sent now: AR, the fast option while speeding, None
        (auto) without a deadline or a fast option."""
        if self.deadline_s is None:
            return None
        return self.fast if self.is_speeding else AR1

    def projected_s(self) -> float | None:
        """When the job will end at the measured rate (seconds from the start)."""
        rate = self.rate()
        if not rate:
            return None
        return self.elapsed() + max(0, self.num_tokens - self.num_done) / rate
