"""Step latency as a function of the batch: seconds = a + b * tokens + c * requests.

Small batches are memory- and overhead-bound (the intercept a dominates), large ones are
compute-bound (b * tokens dominates): that is why speculation, which buys fewer steps with
more tokens per step, pays at small batches and stops paying as batches grow. c is the
per-request cost (chunk bookkeeping, attention over each request's cache).

The fit is weighted least squares over the start-up profile (a prior worth
`prior_weight` observations in all) and a sliding window of measured steps, refitted after
every observation, so it follows the machine (another job on the CPU, a warmer cache).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

Point = tuple[int, int, float]  # (batch tokens, batch requests, seconds)


@dataclass(frozen=True)
class CostCoefficients:
    intercept_s: float
    per_token_s: float
    per_request_s: float

    def predict(self, num_tokens: int, num_requests: int) -> float:
        if num_tokens <= 0:
            return 0.0
        return (self.intercept_s + self.per_token_s * num_tokens
                + self.per_request_s * max(1, num_requests))


class CostModel:
    def __init__(self, profile: Iterable[Point], prior_weight: float = 50.0,
                 window: int = 256, max_ratio: float = 3.0) -> None:
        points = list(profile)
        if len(points) < 3:
            raise ValueError("the cost profile needs at least 3 points")
        self.window: deque[Point] = deque(maxlen=window)
        self.max_ratio = max_ratio
        w = prior_weight / len(points)
        self._prior = _normal_sums(points, w)
        self.coef = _solve(self._prior) or _fallback(points)
        self.prior_coef = self.coef
        self.num_observed = 0
        self._sums = [0.0] * 12  # the window's normal sums, kept incrementally

    def _add(self, point: Point, sign: float) -> None:
        for i, value in enumerate(_normal_sums([point], sign)):
            self._sums[i] += value

    def predict(self, num_tokens: int, num_requests: int = 1) -> float:
        """Seconds for one step of num_tokens tokens over num_requests requests."""
        return self.coef.predict(num_tokens, num_requests)

    def observe(self, num_tokens: int, num_requests: int, seconds: float) -> None:
        if num_tokens <= 0 or seconds <= 0:
            return
        # Clip outliers (a GC pause, the OS scheduling another job) to a bounded ratio of
        # the prediction, so that one bad step cannot swing the fit.
        guess = self.predict(num_tokens, num_requests)
        seconds = min(max(seconds, guess / self.max_ratio), guess * self.max_ratio)
        if len(self.window) == self.window.maxlen:
            self._add(self.window[0], -1.0)
        point = (num_tokens, num_requests, seconds)
        self.window.append(point)
        self._add(point, 1.0)
        self.num_observed += 1
        fit = _solve(tuple(p + q for p, q in zip(self._prior, self._sums, strict=True)))
        if fit is not None:
            self.coef = fit


def _features(tokens: int, requests: int) -> tuple[float, float, float]:
    return 1.0, float(tokens), float(max(1, requests))


def _normal_sums(points: Iterable[Point], weight: float) -> tuple[float, ...]:
    """Flattened [X^T W X (9), X^T W y (3)]."""
    xtx = [0.0] * 9
    xty = [0.0] * 3
    for tokens, requests, seconds in points:
        x = _features(tokens, requests)
        for i in range(3):
            xty[i] += weight * x[i] * seconds
            for j in range(3):
                xtx[3 * i + j] += weight * x[i] * x[j]
    return tuple(xtx + xty)


def _solve(sums: tuple[float, ...]) -> CostCoefficients | None:
    """Gaussian elimination on the 3x3 normal equations; None when singular or when a
    slope comes out negative (more work never makes a step faster)."""
    m = [list(sums[3 * i:3 * i + 3]) + [sums[9 + i]] for i in range(3)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(3):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [a - f * b for a, b in zip(m[r], m[col], strict=True)]
    a, b, c = (m[i][3] / m[i][i] for i in range(3))
    if b < 0 or c < 0 or a + b + c <= 0:
        return None
    return CostCoefficients(a, b, c)


def _fallback(points: list[Point]) -> CostCoefficients:
    """A line through the smallest and largest batches when the full fit is degenerate."""
    lo = min(points, key=lambda p: p[0])
    hi = max(points, key=lambda p: p[0])
    slope = max(0.0, (hi[2] - lo[2]) / max(1, hi[0] - lo[0]))
    return CostCoefficients(max(1e-6, lo[2] - slope * lo[0]), slope, 0.0)
