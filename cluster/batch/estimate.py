"""The start-up estimate of a batch job: its size, and how long it takes with each lossless
option, from the machine's step-cost profile (bench/slo_profile.json: policies/cost_model.py)
and the profile's tokens per forward, with `window` requests decoding together on each
replica and every request running to its max_tokens (an upper bound: EOS ends many sooner).
Each step also pays the serving path's time between steps (STEP_OVERHEAD_S), which the
profile does not see. Speculation's tokens per forward come from the profile's traces
(greedy): at T > 0 it accepts fewer (bench/batch_modes.py), so the job checks what the
fast option buys once it runs it (pacer.py). Plain Python."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from policies.cost_model import CostModel
from policies.option import AR1, CANDIDATES, Option
from policies.profile import Profile

CHARS_PER_TOKEN = 3.0  # a text prompt's size before tokenizing (the estimate only)
# The serving path's time per step outside the engine's step (replica event loop, stream
# routing): `python -m bench.batch_modes` measured 1-4 ms a step on the 2-core CPU at 1-16
# in flight on a quiet box (BENCHMARKS.md, "Batch jobs"); more on a busy one.
STEP_OVERHEAD_S = 0.003


@dataclass(frozen=True)
class Workload:
    num_requests: int
    num_prompt_tokens: int  # estimated for text prompts
    num_output_tokens: int  # max_tokens summed: an upper bound

    def __post_init__(self) -> None:
        if min(self.num_requests, self.num_prompt_tokens, self.num_output_tokens) < 0:
            raise ValueError(f"negative workload {self}")


def planned_tokens(kind: str, body: dict[str, Any], chat_max_tokens: int) -> int:
    """The most output tokens one body asks for (max_tokens x n; a body that will be refused
    counts as it stands)."""
    n = body.get("n", 1) if isinstance(body.get("n", 1), int) else 1
    if kind == "completion":
        mt = body.get("max_tokens", 16)
    else:
        mt = body.get("max_completion_tokens") or body.get("max_tokens") or chat_max_tokens
    return max(1, mt if isinstance(mt, int) else 16) * max(1, n)


def workload_of(bodies: Iterable[tuple[str, dict[str, Any]]], chat_max_tokens: int
                ) -> Workload:
    """(kind, body) pairs -> their size."""
    num = prompt = output = 0
    for kind, body in bodies:
        num += 1
        if kind == "completion":
            prompt += _prompt_tokens(body.get("prompt"))
        else:
            msgs = body.get("messages")
            prompt += sum(_prompt_tokens(m.get("content")) for m in msgs
                          if isinstance(m, dict)) if isinstance(msgs, list) else 0
        output += planned_tokens(kind, body, chat_max_tokens)
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
        step = cost.predict(batch * option.work_tokens, batch) + STEP_OVERHEAD_S
        out[option] = prefill + output / (batch * tpf[option]) * step
    return out


def fastest_option(profile: Profile, batch: int, ar_s_per_token: float | None = None
                   ) -> Option:
    """The lossless option the profile predicts fastest per request with `batch` requests
    decoding together, each under it: what a job behind its deadline asks for.

    ar_s_per_token: AR's time per token per request as measured; what it takes beyond the
    profile's predicted step is overhead paid per forward (scheduling, outputs, other
    processes: ~2x the step on a busy 2-core box), which favours options with fewer forwards
    per token (quadratic over linear speculation)."""
    cost = CostModel(profile.cost)
    tpf = {AR1: 1.0, **profile.tokens_per_forward()}
    n = max(1, batch)
    overhead = STEP_OVERHEAD_S if ar_s_per_token is None else max(
        0.0, ar_s_per_token - cost.predict(n, n))
    return min((o for o in (AR1, *CANDIDATES) if o.is_lossless and o in tpf),
               key=lambda o: (cost.predict(n * o.work_tokens, n) + overhead) / tpf[o])


def ladder(base: int, cap: int) -> list[int]:
    """The requests in flight a job steps through behind schedule (pacer.py doubles the
    window up to its cap): base, 2 base, ..., cap."""
    if not 1 <= base <= cap:
        raise ValueError(f"need 1 <= base <= cap, got {base}, {cap}")
    out = [base]
    while out[-1] < cap:
        out.append(min(cap, 2 * out[-1]))
    return out
