"""Pipelined speculation's expected tokens per step, derived from linear speculation's
recorded iterations (no separate calibration): both draft [seed, MASK x (B-1)] and verify
the same causal block, so they accept the same tokens. What differs is the steps an
iteration takes: after a fully accepted block the draft pool has already drafted the next
one (drafted while this one was verified), so the next iteration is one verify step; after
a partial acceptance it is a redraft step and a verify step, as in linear speculation.
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.option import LINEAR, PIPELINED, Option

Iteration = tuple[int, int]  # (forwards, tokens)


def pipelined_trace(linear: list[Iteration], block: int) -> list[Iteration]:
    """One request's linear-B iterations as pipelined-B iterations (steps, tokens)."""
    out, ahead = [], False
    for _, tokens in linear:
        out.append((1 if ahead else 2, tokens))
        ahead = tokens == block  # B - 1 drafts accepted + the bonus token
    return out


def pipelined_traces(traces: Mapping[Option, list[list[Iteration]]]
                     ) -> dict[Option, list[list[Iteration]]]:
    return {Option(PIPELINED, o.block): [pipelined_trace(t, o.block) for t in prompts]
            for o, prompts in traces.items() if o.mode == LINEAR}


def tokens_per_step(traces: Mapping[Option, list[list[Iteration]]]) -> dict[Option, float]:
    out = {}
    for option, prompts in pipelined_traces(traces).items():
        steps = sum(f for trace in prompts for f, _ in trace)
        if steps:
            out[option] = sum(t for trace in prompts for _, t in trace) / steps
    return out
