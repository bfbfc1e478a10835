"""The simulator's ground truth for step times, from the measured profile.

A step lasts what the straight-line fit of the profile predicts for its tokens and
requests, times lognormal noise whose spread is the spread the profile itself showed
around that fit (a robust estimate: 1.4826 x the median absolute log residual). On a shared
CPU most of that spread is other processes, and the policy has to live with it; a point-
by-point interpolation of the measurements would replay their noise as if it were the
device's shape. `noise` overrides the measured spread.

`drift` (off by default) adds what a shared CPU also does and per-step noise does not: a
slow wander of the whole machine's speed, over hundreds of steps (on the engine the mean
step of the same batch moved 8.7-13.6 ms between runs; BENCHMARKS.md, #12's CPU engine). It
is an AR(1) process in log step time, x' = rho x + sqrt(1 - rho^2) drift e, e ~ N(0, 1),
started at its stationary spread: every step's time is multiplied by exp(x). It draws from
its own seeded generator, so a clock without drift draws what it drew before.
"""

from __future__ import annotations

import math
import random
import statistics

from policies.cost_model import CostModel, Point


class StepClock:
    def __init__(self, profile: list[Point], noise: float | None = None, seed: int = 0,
                 max_noise: float = 0.3, drift: float = 0.0, drift_rho: float = 0.995) -> None:
        if drift < 0 or not 0.0 <= drift_rho < 1.0:
            raise ValueError(f"drift must be >= 0 and drift_rho in [0, 1), got {drift}, "
                             f"{drift_rho}")
        self.fit = CostModel(profile, window=1)
        residuals = [math.log(s / self.fit.predict(t, r)) for t, r, s in profile if s > 0]
        measured = 1.4826 * statistics.median(abs(x) for x in residuals)
        self.noise = min(max_noise, measured) if noise is None else noise
        self.rng = random.Random(seed)
        self.drift, self.drift_rho = drift, drift_rho
        self._drift_rng = random.Random(f"drift-{seed}")
        self.level = self._drift_rng.gauss(0.0, drift) if drift > 0 else 0.0  # log factor

    def mean_s(self, num_tokens: int, num_requests: int) -> float:
        return self.fit.predict(num_tokens, num_requests)

    def step_s(self, num_tokens: int, num_requests: int) -> float:
        jitter = math.exp(self.rng.gauss(0.0, self.noise)) if self.noise > 0 else 1.0
        if self.drift > 0:
            rho = self.drift_rho
            self.level = rho * self.level + math.sqrt(1 - rho * rho) * self._drift_rng.gauss(
                0.0, self.drift)
            jitter *= math.exp(self.level)
        return self.mean_s(num_tokens, num_requests) * jitter
