"""Step latency as a function of the batch:

    seconds = a + b * tokens + c * requests + d * [some chunk is longer than one token]

Small batches are memory- and overhead-bound (a dominates), large ones compute-bound
(b * tokens dominates): that is why speculation, which buys fewer steps with more tokens
per step, pays at small batches and stops paying as batches grow. c is the per-request cost
(chunk bookkeeping, attention over each request's cache). d is what a step pays once as soon
as any chunk has more than one token (a prefill, a draft, a verify): on this CPU's torch
path a batch of one-token chunks takes a cheaper attention path (measured: one request
9.3 ms for 1 token, 11.8 ms for 3, 13.7 ms for 8). A batch has a chunk longer than one
token exactly when it has more tokens than requests.

The fit is least squares of relative errors over the start-up profile (a prior worth
`prior_weight` observations in all) and a sliding window of measured steps, refitted after
every observation, so it follows the machine (another job on the CPU, a warmer cache).
A measured step's error is relative to what the model predicted for it, not to the measured
time: weighting by 1/measured^2 counts a slow step less than a fast one, and under the step
noise of a shared CPU the fit then sat under the mean step (lognormal spread 0.2 / 0.3:
9 % / 20 % under), so admission and the selector planned paces the engine did not keep
(tests/policies/test_estimators.py). The mean is what a request's time per token adds up.

The prior moves with the machine: its points are scaled by the mean ratio of measured steps
to the prior's own prediction (`machine_scale`) before they join the fit (and a refit that
fails, singular or with a negative slope, falls back to the prior so scaled). Unscaled, on a
machine slower than its profile, the prior's multi-token points looked cheap next to the
measured AR-only steps (which say nothing about `d`), every refit came out with d < 0 and
was discarded, and the model never left the profile: on the engine, steps ran 1.2-2.5x its
prediction through whole runs, so admission and pass 3 saw spare compute that was not there
(BENCHMARKS.md, "#12's CPU-engine target, sixth session").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Point = tuple[int, int, float]  # (batch tokens, batch requests, seconds)
NUM_FEATURES = 4


def features(tokens: int, requests: int) -> tuple[float, ...]:
    requests = max(1, requests)
    return 1.0, float(tokens), float(requests), 1.0 if tokens > requests else 0.0


@dataclass(frozen=True)
class CostCoefficients:
    intercept_s: float
    per_token_s: float
    per_request_s: float
    multi_token_s: float

    def predict(self, num_tokens: int, num_requests: int) -> float:
        if num_tokens <= 0:
            return 0.0
        # features(), inlined (asked ~100x a select): the same products, summed in order
        requests = num_requests if num_requests > 1 else 1
        return (self.intercept_s * 1.0 + self.per_token_s * float(num_tokens)
                + self.per_request_s * float(requests)
                + self.multi_token_s * (1.0 if num_tokens > requests else 0.0))


class CostModel:
    def __init__(self, profile: Iterable[Point], prior_weight: float = 50.0,
                 window: int = 256, max_ratio: float = 3.0) -> None:
        points = list(profile)
        if len(points) < NUM_FEATURES:
            raise ValueError(f"the cost profile needs at least {NUM_FEATURES} points")
        # (batch tokens, batch requests, seconds, the prediction its error is relative to)
        self.window: deque[tuple[int, int, float, float]] = deque(maxlen=window)
        self.max_ratio, self.prior_weight = max_ratio, prior_weight
        self._prior = _normal_sums(points, prior_weight / len(points))
        self.coef = _solve(self._prior) or _fallback(points)
        self.prior_coef = self.coef
        self.num_observed = 0
        self._sums = [0.0] * len(self._prior)  # the window's normal sums, kept incrementally
        self._ratio_sum = 0.0  # the window's sum of measured / prior_coef's prediction

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
        point = (num_tokens, num_requests, seconds, guess)
        self.window.append(point)
        self._add(point, 1.0)
        self.num_observed += 1
        scale = self.machine_scale()
        self.coef = _solve(_scaled(self._prior, scale, self._sums)) or _times(
            self.prior_coef, scale)

    def machine_scale(self) -> float:
        """How much slower than its profile the machine ran over the window: the mean ratio
        of measured steps to the prior's prediction, with the profile counted as
        `prior_weight` steps at ratio 1 (so that one clipped outlier cannot triple it)."""
        return (self.prior_weight + self._ratio_sum) / (self.prior_weight + len(self.window))

    def _add(self, point: tuple[int, int, float, float], sign: float) -> None:
        tokens, requests, seconds, guess = point
        self._ratio_sum += sign * seconds / self.prior_coef.predict(tokens, requests)
        # _normal_sums of this one point (weight sign, errors relative to guess) added in
        # place: the same products (0.0 + p: as its sums start), without a list a step
        x, w, n, sums = features(tokens, requests), sign / guess**2, NUM_FEATURES, self._sums
        for i in range(n):
            wx = w * x[i]
            sums[n * n + i] += 0.0 + wx * seconds
            for j in range(n):
                sums[n * i + j] += 0.0 + wx * x[j]


def _normal_sums(points: Iterable[Point], weight: float, scale: float | None = None
                 ) -> list[float]:
    """Flattened [X^T W X (n*n), X^T W y (n)]; errors relative to `scale` (a prediction
    of the step) where given, else to each point's own seconds (the profile's points)."""
    n = NUM_FEATURES
    out = [0.0] * (n * n + n)
    for tokens, requests, seconds in points:
        x = features(tokens, requests)
        # relative error: a 10 ms step counts as much as a 300 ms one
        w = weight / (seconds if scale is None else scale)**2
        for i in range(n):
            out[n * n + i] += w * x[i] * seconds
            for j in range(n):
                out[n * i + j] += w * x[i] * x[j]
    return out


def _scaled(prior: Sequence[float], scale: float, window: Sequence[float]) -> list[float]:
    """The normal sums of the prior's points with every time times `scale` (relative
    weights 1/(scale s)^2: X^T W X / scale^2, X^T W y / scale), plus the window's."""
    n2 = NUM_FEATURES * NUM_FEATURES
    return ([p / scale**2 + q for p, q in zip(prior[:n2], window[:n2], strict=True)]
            + [p / scale + q for p, q in zip(prior[n2:], window[n2:], strict=True)])


def _times(coef: CostCoefficients, scale: float) -> CostCoefficients:
    return CostCoefficients(coef.intercept_s * scale, coef.per_token_s * scale,
                            coef.per_request_s * scale, coef.multi_token_s * scale)


def _solve(sums: Sequence[float]) -> CostCoefficients | None:
    """Gaussian elimination on the normal equations; None when singular or when a slope
    comes out negative (more work never makes a step faster)."""
    n = NUM_FEATURES
    m = [list(sums[n * i:n * i + n]) + [sums[n * n + i]] for i in range(n)]
    for col in range(n):  # (refitted every step: loops without a key function or zip)
        pivot = col
        for r in range(col + 1, n):  # the first of the largest, as max() picks
            if abs(m[r][col]) > abs(m[pivot][col]):
                pivot = r
        if abs(m[pivot][col]) < 1e-12:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        top = m[col]
        for r in range(n):
            if r != col:
                row = m[r]
                f = row[col] / top[col]
                m[r] = [row[k] - f * top[k] for k in range(n + 1)]
    a, b, c, d = (m[i][n] / m[i][i] for i in range(n))
    if min(b, c, d) < -1e-7 or a + b + c <= 0:
        return None
    return CostCoefficients(a, max(0.0, b), max(0.0, c), max(0.0, d))


def _fallback(points: list[Point]) -> CostCoefficients:
    """A line through the smallest and largest batches when the full fit is degenerate."""
    lo = min(points, key=lambda p: p[0])
    hi = max(points, key=lambda p: p[0])
    slope = max(0.0, (hi[2] - lo[2]) / max(1, hi[0] - lo[0]))
    return CostCoefficients(max(1e-6, lo[2] - slope * lo[0]), slope, 0.0, 0.0)
