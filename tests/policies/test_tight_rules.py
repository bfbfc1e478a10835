"""The rules that decide tight SLOs (bounds below AR's pace): the per-request acceptance
prior from the profile, quadratic's entry pass kept out of acceptance, the uniform start of
the search, and admission on what auto requests actually run."""

from __future__ import annotations

import random

from policies.decision import StepRecord, WorkRecord
from policies.modes import ChunkKind
from policies.option import AR1, Option
from policies.policy import SLOPolicy
from policies.profile import Profile
from policies.request_view import RequestView
from tests.policies.helpers import synthetic_profile, view

Q4, L8 = Option("spec_quadratic", 4), Option("spec_linear", 8)
# A GPU-shaped device: 4 ms a step, 0.02 ms a token, 0.005 ms a request.
GPU = [(t, r, 0.004 + 0.00002 * t + 0.000005 * r) for t, r in
       [(1, 1), (8, 1), (20, 1), (72, 1), (8, 8), (32, 32), (64, 64), (160, 8), (256, 16)]]


def _traces(spread: float, seed: int = 0) -> dict[Option, list[list[tuple[int, int]]]]:
    """Quadratic B=4 iterations of 16 prompts, each prompt accepting drafts at its own
    mean (scattered by `spread`), one iteration's tokens random around it."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(16):
        mean = min(4.0, max(1.0, rng.gauss(2.5, spread)))
        prompts.append([(1, min(4, max(1, round(rng.gauss(mean, 1.0))))) for _ in range(40)])
    return {Q4: prompts}


def test_the_request_prior_follows_how_much_prompts_differ() -> None:
    alike = Profile(GPU, _traces(spread=0.05)).request_prior_tokens()
    apart = Profile(GPU, _traces(spread=1.0)).request_prior_tokens()
    assert apart < 5.0 < 20.0 < alike  # one bad iteration is luck where prompts are alike
    assert Profile(GPU, {}).request_prior_tokens() == 6.0  # no traces: the old default


def test_quadratic_entry_pass_is_not_counted_as_bad_acceptance() -> None:
    p = SLOPolicy(synthetic_profile())
    before = p.acceptance.tokens_per_forward(Q4, "r")
    draft = WorkRecord("r", ChunkKind.DRAFT, Q4, 4, 0)  # the entry pass: nothing emitted
    p.learn(StepRecord(4, 1, 0.01, (draft,)))
    quad = WorkRecord("r", ChunkKind.QUADRATIC, Q4, 20, 2)  # then a forward emitting 2.2-ish
    p.learn(StepRecord(20, 1, 0.01, (quad,)))
    # Counted, the two forwards would read as 1 token per forward: a factor far below 1.
    assert p.acceptance.tokens_per_forward(Q4, "r") > 0.85 * before


def _tight(rid: str, now: float, tpot_ms: float) -> RequestView:
    return view(rid, now, tpot_ms=tpot_ms, max_tokens=32, arrival_s=now - 0.004)


def test_tight_requests_all_speculate_when_the_device_has_room() -> None:
    # Five requests whose bound (3 ms) AR alone (4 ms) misses: on a GPU-shaped device
    # every one of them gets a speculative option; none is left behind at AR.
    traces = {Q4: [[(1, 3)] * 20] * 4, L8: [[(2, 5)] * 20] * 4}
    p = SLOPolicy(Profile(GPU, traces))
    views = [_tight(f"t{i}", 1.0, 3.0) for i in range(5)]
    options = p.select(views, 1.0)
    assert all(o is not None and o != AR1 for o in options.values())


def test_admission_counts_running_auto_requests_at_the_option_they_run() -> None:
    traces = {Q4: [[(1, 3)] * 20] * 4, L8: [[(2, 5)] * 20] * 4}
    p = SLOPolicy(Profile(GPU, traces))
    running = [_tight(f"t{i}", 1.0, 3.0) for i in range(40)]
    newcomer = view("new", 1.0, tpot_ms=3.0, max_tokens=32, num_output=0, arrival_s=1.0)
    at_ar = p.admit(newcomer, 1.0, running)
    for r in running:  # the same requests, now running quadratic B=4 (20 tokens each)
        r.option = Q4
    busy = p.admit(newcomer, 1.0, running)
    assert busy is not None and busy.status == 429 and "tpot_ms=3" in busy.reason
    assert at_ar is None  # counted at AR's work (one token each) it looked admissible
