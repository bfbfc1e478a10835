"""The simulator's ground truth for step times: the measured profile itself.

The policy's cost model is a straight-line fit; the device is not. Here a step's time is
the fit corrected by how far the measured points near it sat from the fit (inverse
distance weighting over the nearest points, in log tokens and log requests), times
lognormal noise: the policy sees a machine that is neither noiseless nor exactly linear.
"""

from __future__ import annotations

import math
import random

from policies.cost_model import CostModel, Point


class StepClock:
    def __init__(self, profile: list[Point], noise: float = 0.05, seed: int = 0,
                 neighbours: int = 3) -> None:
        self.fit = CostModel(profile, window=1)
        self.points = [(math.log(t), math.log(max(1, r)), s / self.fit.predict(t, r))
                       for t, r, s in profile if t > 0]
        self.noise, self.neighbours = noise, neighbours
        self.rng = random.Random(seed)

    def mean_s(self, num_tokens: int, num_requests: int) -> float:
        x, y = math.log(max(1, num_tokens)), math.log(max(1, num_requests))
        near = sorted(((x - px) ** 2 + (y - py) ** 2, ratio) for px, py, ratio in self.points)
        near = near[: self.neighbours]
        weights = [1.0 / (d + 1e-3) for d, _ in near]
        ratio = sum(w * r for w, (_, r) in zip(weights, near, strict=True)) / sum(weights)
        return self.fit.predict(num_tokens, num_requests) * ratio

    def step_s(self, num_tokens: int, num_requests: int) -> float:
        jitter = math.exp(self.rng.gauss(0.0, self.noise)) if self.noise > 0 else 1.0
        return self.mean_s(num_tokens, num_requests) * jitter
