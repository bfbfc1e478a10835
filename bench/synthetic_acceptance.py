"""A synthetic acceptance source shaped after Nemotron-Labs-Diffusion-8B's published figures,
for `tandem bench slo --acceptance nld8b`. Synthetic: no such model runs here.

Published (model card): quadratic self-speculation 6.38 tokens per forward (TPF), linear
self-speculation 5.99, block diffusion 2.57. Read here as: quadratic 6.38 tokens per
forward at block 16; linear 5.99 tokens per draft-and-verify iteration at block 16 (its
verify forward; that is ~3.0 per forward in this project's count of two forwards per
iteration: the cautious reading); diffusion 2.57 tokens per forward at block 16. The block
of the published figures is not stated: 16 is an assumption.

Each recorded prompt p accepts each draft token with probability alpha_p (a geometric run
of accepted drafts, as a one-pass draft that agrees with AR token by token): an iteration at
block B emits 1 + min(G, B - 1) tokens, G ~ Geometric(alpha_p). alpha_p scatters around a
mean (sd `SPREAD`) that is solved so that the expected figure at block 16 over the prompts
equals the published one. Diffusion at block B takes 1 + ceil(B / r_p) forwards (denoise
passes then a commit pass), r_p scattered around a mean solved the same way.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from pathlib import Path

from policies.option import DIFFUSION, LINEAR, QUADRATIC, Option
from policies.profile import Iteration, Profile

PUBLISHED = {QUADRATIC: 6.38, LINEAR: 5.99, DIFFUSION: 2.57}  # at block REFERENCE_BLOCK
REFERENCE_BLOCK = 16
SPREAD = 0.06  # sd of a prompt's acceptance around the mean
NUM_PROMPTS, NUM_ITERATIONS = 16, 48
BLOCKS = {LINEAR: (2, 3, 4, 6, 8, 12, 16), QUADRATIC: (2, 3, 4, 5, 6, 8, 16),
          DIFFUSION: (8, 16)}  # quadratic 16 (272 tokens a forward): to check the published figure


def expected_tokens(alpha: float, block: int) -> float:
    """1 + E[min(G, B - 1)] for G ~ Geometric(alpha): sum of alpha^k, k = 1 .. B-1."""
    return 1.0 + sum(alpha ** k for k in range(1, block))


def _solve(target: float, value: Callable[[float], float], lo: float, hi: float) -> float:
    for _ in range(60):  # value rises with x
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if value(mid) < target else (lo, mid)
    return (lo + hi) / 2


def _offsets(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.0, 1.0) for _ in range(NUM_PROMPTS)]


def prompt_alphas(mode: str, seed: int = 0) -> list[float]:
    offsets = _offsets(seed)

    def alphas(mean: float) -> list[float]:
        return [min(0.99, max(0.05, mean + SPREAD * z)) for z in offsets]

    def mean_tpf(mean: float) -> float:
        return sum(expected_tokens(a, REFERENCE_BLOCK) for a in alphas(mean)) / NUM_PROMPTS

    return alphas(_solve(PUBLISHED[mode], mean_tpf, 0.05, 0.99))


def prompt_rates(seed: int = 0) -> list[float]:
    """Diffusion: tokens committed per denoise pass, per prompt."""
    offsets = _offsets(seed + 1)

    def rates(mean: float) -> list[float]:
        return [max(1.0, mean * (1 + 3 * SPREAD * z)) for z in offsets]

    def mean_tpf(mean: float) -> float:
        b = REFERENCE_BLOCK
        return sum(b / (1 + math.ceil(b / r)) for r in rates(mean)) / NUM_PROMPTS

    return rates(_solve(PUBLISHED[DIFFUSION], mean_tpf, 1.0, 64.0))


def _geometric_run(rng: random.Random, alpha: float, cap: int) -> int:
    n = 0
    while n < cap and rng.random() < alpha:
        n += 1
    return n


def traces(seed: int = 0) -> dict[Option, list[list[Iteration]]]:
    rng = random.Random(seed)
    out: dict[Option, list[list[Iteration]]] = {}
    for mode in (LINEAR, QUADRATIC):
        forwards = 2 if mode == LINEAR else 1
        alphas = prompt_alphas(mode, seed)
        for b in BLOCKS[mode]:
            out[Option(mode, b)] = [
                [(forwards, 1 + _geometric_run(rng, a, b - 1)) for _ in range(NUM_ITERATIONS)]
                for a in alphas]
    for b in BLOCKS[DIFFUSION]:
        out[Option(DIFFUSION, b)] = [[(1 + math.ceil(b / r), b)] * NUM_ITERATIONS
                                     for r in prompt_rates(seed)]
    return out


def with_nld8b_acceptance(profile: Profile, seed: int = 0) -> Profile:
    meta = dict(profile.meta, acceptance="synthetic, Nemotron-Labs-Diffusion-8B's published "
                "TPF (bench/synthetic_acceptance.py)")
    return Profile(profile.cost, traces(seed), meta)


def add_profile_arguments(p: argparse.ArgumentParser, default: Path) -> None:
    """A bench's --profile and --acceptance, as load_profile reads them."""
    p.add_argument("--profile", type=Path, default=default,
                   help="cost points + acceptance traces (bench/profiles/ holds GPU ones)")
    p.add_argument("--acceptance", choices=("profile", "nld8b"), default="profile",
                   help="profile: the profile's traces; nld8b: synthetic traces at "
                        "Nemotron-Labs-Diffusion-8B's published tokens per forward")


def load_profile(path: str | Path, acceptance: str) -> Profile:
    """A cost profile with the acceptance source a bench's `--acceptance` names: its own
    traces ("profile") or the synthetic NLD-8B ones ("nld8b")."""
    profile = Profile.load(path)
    return with_nld8b_acceptance(profile) if acceptance == "nld8b" else profile
