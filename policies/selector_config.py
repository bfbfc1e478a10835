"""The selector's configuration and the options auto chooses among (policies/selector.py)."""

from __future__ import annotations

from dataclasses import dataclass

from policies.bounds import check_block_bounds, check_threshold_bounds
from policies.option import AR1, DIFFUSION, LINEAR, QUADRATIC, Option
from policies.slo import SAFETY

QUAD_HORIZON = 8.0  # forwards per quadratic entry before any is measured
# What auto chooses among: every block of each mode within `block_bounds` that the profile
# has acceptance for (so the simulator replays real iterations for it), and options of
# modes without bounds (pipelined, where a deployment adds it) that have a prior; each
# request's block comes from its own acceptance and pace: the cheapest option that meets
# it, or the one that buys the most throughput. Long blocks pay where a chunk of tens of
# tokens costs about a one-token step (a GPU near the bandwidth bound:
# bench/profiles/roofline-h200-llama8b.json); on the CPU profile the cost model prices them
# out.
LADDER = (AR1, *(Option(LINEAR, b) for b in (2, 3, 4, 6, 8, 12, 16)),
          *(Option(QUADRATIC, b) for b in (2, 3, 4, 5, 6, 8)),
          *(Option(DIFFUSION, b) for b in (8, 16)))
BLOCK_BOUNDS = ((LINEAR, 4, 8), (QUADRATIC, 2, 6), (DIFFUSION, 8, 16))
THRESHOLD_BOUNDS = (0.7, 0.95)


@dataclass(frozen=True)
class SelectorConfig:
    safety: float = SAFETY  # plan to use at most this share of the time left
    switch_gain: float = 0.03  # keep the current option unless another is this much better
    min_gain: float = 0.10  # spare compute buys speed only for this much more throughput
    # ... and moves a request pass 2a's search put on speculation (policies/tight_search.py)
    # only for this much: the search bought it within its loss budget, and at min_gain
    # pass 3 gave up most of those bets (back to AR) to lift the batch's tokens per second
    # (tandem-tiny mixed_tight overload, seed 0: 86 times). Never moving them was worse
    # (their work crowded the other tight requests out); BENCHMARKS.md, "Ninth session".
    searched_gain: float = 0.20
    # Pass 3 buys speed only with compute beyond a margin: the step may grow to this share
    # of the longest that keeps every request within its limit (at its limit a request
    # has even odds; speculating up to it made met requests miss later: CPU interactive
    # medium_high 0.95x AR -> 1.00x at 0.6, BENCHMARKS.md, "fourth session").
    spare_margin: float = 0.7
    uniform_speed_up: bool = True  # pass 3 first tries one option for every free request
    off_track_slip: float = 0.1  # others may slow a request that is off track by this share
    # Rescues may lower the batch's predicted tokens per second (against all-AR, summed
    # over the step's rescues) by more than `rescue_loss` only while every other request
    # has `rescue_slack_steps` steps of slack: spare compute. Without this rule, speculating
    # for requests at risk slowed every other one and more missed than were saved
    # (simulator, bench/slo_profile.json, goodput against SLO-scheduled AR: interactive-only
    # medium_high 0.85x -> 0.97x, batch-only overload 0.69x -> 1.02x, mixed medium_high
    # 1.09x -> 1.05x). At 0.03 instead of 0 the same spiral remained near capacity
    # (interactive overload, H200 roofline 0.86x, CPU 0.96x the best fixed mode; at 0:
    # 1.01x / 1.03x; BENCHMARKS.md > SLO scheduling, "Rescues that cost throughput").
    rescue_loss: float = 0.0
    # Pass 2a (requests whose bound only speculation meets) may cost the batch this much:
    # they have no cheaper way to be met, and a fixed speculative mode would cost more.
    tight_loss: float = 0.03
    # ... a share the requests that pay decide (policies/loss_budget.py): a request with only
    # a deadline affords what keeps it within this share of its pace need.
    deadline_margin: float = 0.7
    budget_by_payer: bool = True
    rescue_slack_steps: float = 20.0
    pool: tuple[Option, ...] = LADDER
    block_bounds: tuple[tuple[str, int, int], ...] = BLOCK_BOUNDS  # (mode, lo, hi)
    # The diffusion commit threshold of auto requests, chosen per request from its own
    # acceptance within these (policies/bounds.py).
    threshold_bounds: tuple[float, float] = THRESHOLD_BOUNDS
    meet_most: bool = True  # pass 2 as one search for the most requests met (else rescues)
    uniform: bool = True  # pass 2's search starts from one option for all of them
    # Pass 2's objective: "expected" requests met by the end (policies/expected_met.py) or
    # "meet_most" this step (policies/meet_most.py).
    objective: str = "expected"
    iteration_cv: float = 0.5  # relative spread of one iteration's tokens
    spread_floor: float = 0.05  # of any pace: step-time noise, estimate error
    search_by_bound: bool = True  # pass 2 takes every request whose TPOT bound AR misses
    same_mode: bool = True  # pass 2's upgrades stay in the uniform start's mode
    # ... and the uniform start values the requests of its kind that keep their option this
    # step (mid-iteration) at each option too (TightSearch._fellows); and it keeps the option
    # most of them run unless another expects `uniform_gain` more of them met. Without the
    # two, a newcomer was started on quadratic speculation beside linear fellows and moved to
    # linear a step later, its entry pass lost (NLD-8B tight medium_high 0.955 -> 0.994x
    # the best fixed mode at 3 seeds; BENCHMARKS.md, "Tenth session").
    uniform_with_fellows: bool = True
    uniform_gain: float = 0.01
    # Pass 2 also takes a request whose TPOT bound AR meets alone but that fell behind
    # (off: the rescue pass has it, with no loss budget: TightSearch._late_rescue).
    late_in_search: bool = False
    # When every decoder is lost (no option meets it even alone) and nobody waits, one that
    # the selector would move from speculation to AR keeps its option: nobody else's bound
    # is at stake, and at AR it misses for certain (policies/policy.py
    # SLOPolicy._keep_lost_options).
    lost_keeps_option: bool = True

    def __post_init__(self) -> None:
        check_block_bounds(self.block_bounds, "SelectorConfig.block_bounds")
        check_threshold_bounds(self.threshold_bounds, "SelectorConfig.threshold_bounds")


DEFAULT_CONFIG = SelectorConfig()
