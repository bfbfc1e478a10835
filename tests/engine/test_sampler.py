"""The sampler draws from the softmax it is given (temperature, top-k, top-p), keyed by
(seed, position) only. A chi-square test with enough draws that a biased noise source fails."""

from __future__ import annotations

import math

import pytest
import torch

from kernels import sampling_ref
from kernels.sampling_ref import filter_logits, sample_reference

VOCAB = 12
DRAWS = 24000


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Upper tail of the chi-square statistic (Wilson-Hilferty normal approximation)."""
    keep = probs > 0
    expected = probs[keep] * counts.sum()
    stat = ((counts[keep] - expected) ** 2 / expected).sum().item()
    k = int(keep.sum()) - 1
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def draw(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    rows = logits.expand(DRAWS, -1)
    n = DRAWS
    tokens, _ = sample_reference(
        rows, torch.full((n,), temperature), torch.full((n,), top_k, dtype=torch.int32),
        torch.full((n,), top_p), torch.full((n,), 1234, dtype=torch.int64),
        torch.arange(n, dtype=torch.int64))  # one draw per position
    return torch.bincount(tokens, minlength=VOCAB).float()


def target(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    x = filter_logits((logits / temperature)[None], torch.tensor([top_k]), torch.tensor([top_p]))
    return x.softmax(-1)[0]


LOGITS = torch.randn(VOCAB, generator=torch.Generator().manual_seed(3)) * 1.5


@pytest.mark.parametrize(("temperature", "top_k", "top_p"),
                         [(1.0, 0, 1.0), (1.0, 5, 1.0), (1.0, 0, 0.8), (0.7, 6, 0.9)])
def test_draws_follow_the_filtered_softmax(temperature: float, top_k: int, top_p: float) -> None:
    counts = draw(LOGITS, temperature, top_k, top_p)
    probs = target(LOGITS, temperature, top_k, top_p)
    assert counts[probs == 0].sum() == 0, "a filtered-out token was drawn"
    assert chi_square_p_value(counts, probs) > 1e-4


def test_a_biased_noise_source_fails_the_same_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test has power: Gumbel noise scaled by 0.8 (a temperature error of 20 %) fails."""
    honest = sampling_ref.gumbel_noise
    monkeypatch.setattr(sampling_ref, "gumbel_noise", lambda *a: honest(*a) * 0.8)
    counts = draw(LOGITS, 1.0, 0, 1.0)
    assert chi_square_p_value(counts, target(LOGITS, 1.0, 0, 1.0)) < 1e-6


def test_noise_depends_on_seed_and_position_only() -> None:
    seeds = torch.tensor([5, 5, 6], dtype=torch.int64)
    positions = torch.tensor([9, 9, 9], dtype=torch.int64)
    noise = sampling_ref.gumbel_noise(seeds, positions, 50)
    assert torch.equal(noise[0], noise[1]) and not torch.equal(noise[0], noise[2])


def test_greedy_rows_take_the_argmax_and_report_its_probability() -> None:
    logits = torch.randn(4, 30)
    tokens, probs = sample_reference(logits, torch.zeros(4), torch.zeros(4, dtype=torch.int32),
                                     torch.ones(4), torch.zeros(4, dtype=torch.int64),
                                     torch.arange(4))
    assert torch.equal(tokens, logits.argmax(-1))
    assert torch.allclose(probs, logits.softmax(-1).max(-1).values)
