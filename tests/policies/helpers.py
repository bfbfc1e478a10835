"""A synthetic profile in plain numbers: a device whose step costs 8 ms + 0.2 ms per token
+ 0.3 ms per request (overhead-bound when small, compute-bound when large), and acceptance
like the shipped model's (tokens per forward)."""

from __future__ import annotations

from policies.option import Option
from policies.profile import Profile
from policies.request_view import RequestView
from policies.slo import SLO

A, B, C = 0.008, 0.0002, 0.0003
TPF = {Option("spec_linear", 4): 1.5, Option("spec_linear", 8): 1.8,
       Option("spec_quadratic", 2): 1.6, Option("spec_quadratic", 3): 2.0,
       Option("spec_quadratic", 4): 2.2}


def step_s(tokens: int, requests: int) -> float:
    return A + B * tokens + C * requests


def synthetic_profile() -> Profile:
    points = [(t, r, step_s(t, r)) for t, r in
              [(1, 1), (8, 1), (20, 1), (72, 1), (8, 8), (32, 32), (64, 64), (160, 8),
               (256, 16), (512, 32)]]
    # Traces: linear iterations are 2 forwards; quadratic ones 1 forward.
    traces = {}
    for o, tpf in TPF.items():
        forwards = 2 if o.mode == "spec_linear" else 1
        tokens = round(tpf * forwards * 10)
        traces[o] = [[(forwards * 10, tokens)]]
    return Profile(points, traces)


def view(rid: str = "r", now: float = 0.0, *, ttft_ms: float | None = None,
         tpot_ms: float | None = None, deadline_ms: float | None = None, priority: int = 0,
         max_tokens: int = 64, num_output: int = 1, arrival_s: float | None = None,
         best_effort: bool = False, num_prompt: int = 32) -> RequestView:
    """A decoding request (first token already out) unless num_output is 0."""
    arrival = now - 0.05 if arrival_s is None else arrival_s
    slo = SLO(ttft_ms, tpot_ms, deadline_ms, best_effort=best_effort)
    first = None if num_output == 0 else arrival + 0.02
    return RequestView(rid, arrival, slo, max_tokens, num_prompt=num_prompt,
                       num_output=num_output, num_pending=num_prompt if num_output == 0 else 1,
                       first_token_s=first, priority=priority)
