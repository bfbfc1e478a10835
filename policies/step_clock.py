"""The simulator's ground truth for step times, from the measured profile.

A step lasts what the straight-line fit of the profile predicts for its tokens and
requests, times lognormal noise whose spread is the spread the profile itself showed
around that fit (a robust estimate: 1.4826 x the median absolute log residual). On a shared
CPU most of that spread is other processes, and the policy has to live with it; a point-
by-point interpolation of the measurements would replay their noise as if it were the
device's shape. `noise` overrides the measured spread.
"""

from __future__ import annotations

import math
import random
import statistics

from policies.cost_model import CostModel, Point


class StepClock:
    def __init__(self, profile: list[Point], noise: float | None = None, seed: int = 0,
                 max_noise: float = 0.3) -> None:
        self.fit = CostModel(profile, window=1)
        residuals = [math.log(s / self.fit.predict(t, r)) for t, r, s in profile if s > 0]
        measured = 1.4826 * statistics.median(abs(x) for x in residuals)
        self.noise = min(max_noise, measured) if noise is None else noise
        self.rng = random.Random(seed)

    def mean_s(self, num_tokens: int, num_requests: int) -> float:
        return self.fit.predict(num_tokens, num_requests)

    def step_s(self, num_tokens: int, num_requests: int) -> float:
        jitter = math.exp(self.rng.gauss(0.0, self.noise)) if self.noise > 0 else 1.0
        return self.mean_s(num_tokens, num_requests) * jitter
