"""What a calibration run measured on the real engine, as JSON: step times and acceptance.

  cost:   [[batch tokens, batch requests, seconds], ...]  (median wall time of engine steps)
  traces: {"spec_linear/8": [[[forwards, tokens], ...] per iteration] per prompt, ...}
          one iteration = the forwards from one steady state to the next and the tokens they
          emitted: AR [1, 1]; linear [2, accepted + 1]; quadratic [1, accepted + 1] (its
          one-off draft pass is not part of it); diffusion [passes + 1, block].
  meta:   where and how it was measured.
The policy's priors and the simulator's ground truth both come from here.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from policies.cost_model import Point
from policies.option import DIFFUSION, Option

Iteration = tuple[int, int]  # (forwards, tokens)


@dataclass
class Profile:
    cost: list[Point]
    traces: dict[Option, list[list[Iteration]]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def num_prompts(self) -> int:
        """How many prompts the longest option's traces hold (at least 1): the range a
        workload draws its requests' prompt indices from."""
        return max((len(p) for p in self.traces.values()), default=1)

    def tokens_per_forward(self) -> dict[Option, float]:
        """Mean tokens per forward of each option over every recorded iteration."""
        out = {}
        for option, prompts in self.traces.items():
            forwards = sum(f for trace in prompts for f, _ in trace)
            tokens = sum(t for trace in prompts for _, t in trace)
            if forwards:
                out[option] = tokens / forwards
        return out

    def request_prior_tokens(self, default: float = 6.0, bounds: tuple[float, float] = (2.0, 200.0)
                             ) -> float:
        """How many tokens of evidence a request's own acceptance needs to weigh as much as
        the overall estimate (policies/acceptance.py `request_prior_tokens`), from the traces
        as empirical Bayes shrinkage does it: per option, the variance of one iteration's
        tokens within a prompt over the variance of the prompts' means (in iterations), times
        the mean tokens per iteration; the median over the speculative options. Where
        prompts differ a lot (tandem-tiny) a few tokens tell a request apart; where they
        barely differ (the synthetic NLD-8B source) one bad iteration is mostly luck."""
        priors = []
        for option, prompts in self.traces.items():
            runs = [[t for _, t in trace] for trace in prompts if len(trace) >= 2]
            if option.mode == DIFFUSION or len(runs) < 2:
                continue
            means = [statistics.fmean(r) for r in runs]
            within = statistics.fmean(statistics.pvariance(r) for r in runs)
            between = statistics.pvariance(means) - within / statistics.fmean(map(len, runs))
            if within > 0:
                priors.append(within / max(between, 1e-6) * statistics.fmean(means))
        if not priors:
            return default
        return min(bounds[1], max(bounds[0], statistics.median(priors)))

    def to_json(self) -> dict:
        return {"meta": self.meta,
                "cost": [[t, r, round(s, 6)] for t, r, s in self.cost],
                "traces": {o.key: [[list(it) for it in trace] for trace in prompts]
                           for o, prompts in sorted(self.traces.items())}}

    @staticmethod
    def from_json(data: dict) -> Profile:
        cost = [(int(t), int(r), float(s)) for t, r, s in data["cost"]]
        traces = {Option.parse(k): [[(int(f), int(t)) for f, t in trace] for trace in prompts]
                  for k, prompts in data.get("traces", {}).items()}
        return Profile(cost, traces, dict(data.get("meta", {})))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")

    @staticmethod
    def load(path: str | Path) -> Profile:
        return Profile.from_json(json.loads(Path(path).read_text()))
