"""Sampling / confidence: the Triton kernel picks exactly the reference's tokens (same hash,
same thresholds, same tie rule) and reports the same probabilities."""

from __future__ import annotations

import pytest
import torch

from kernels.sampling_ref import sample_reference
from kernels.sampling_triton import sample_triton


def _params(rows: int, vocab: int, gen: torch.Generator, device: str
            ) -> tuple[torch.Tensor, ...]:
    """A mix per row: greedy or T in (0.3, 1.7); top-k off / 1 / small / >= vocab; top-p
    off / 0.9 / 0.3; distinct seeds and absolute positions."""
    temperature = torch.where(torch.rand(rows, generator=gen) < 0.3, 0.0,
                              0.3 + 1.4 * torch.rand(rows, generator=gen))
    top_k = torch.tensor([0, 1, 5, vocab + 3])[torch.randint(0, 4, (rows,), generator=gen)]
    top_p = torch.tensor([1.0, 0.9, 0.3])[torch.randint(0, 3, (rows,), generator=gen)]
    seeds = torch.randint(0, 2**63 - 1, (rows,), generator=gen)
    positions = torch.randint(0, 5000, (rows,), generator=gen)
    return tuple(t.to(device) for t in (temperature, top_k.int(), top_p, seeds, positions))


def _check(logits: torch.Tensor, *params: torch.Tensor) -> None:
    tokens, probs = sample_triton(logits, *params)
    ref_tokens, ref_probs = sample_reference(logits, *params)
    assert tokens.dtype == torch.int64 and probs.dtype == torch.float32
    assert tokens.tolist() == ref_tokens.tolist()
    torch.testing.assert_close(probs, ref_probs, atol=1e-6, rtol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows,vocab", [(1, 1), (3, 3), (17, 17), (5, 130), (3, 5000)])
def test_random_rows(rows: int, vocab: int, dtype: torch.dtype, device: str,
                     gen: torch.Generator) -> None:
    """vocab 5000 streams the row in two tiles (4096 + 904)."""
    logits = (torch.randn(rows, vocab, generator=gen) * 2.5).to(device, dtype)
    _check(logits, *_params(rows, vocab, gen, device))


def test_ties(device: str, gen: torch.Generator) -> None:
    """Integer logits: many equal values. Greedy takes the lowest index of the maximum;
    top-k and top-p keep every value tied with the threshold."""
    rows, vocab = 12, 40
    logits = torch.randint(-3, 3, (rows, vocab), generator=gen).float().to(device)
    params = list(_params(rows, vocab, gen, device))
    params[2] = torch.tensor([1.0, 0.37, 0.61, 0.83] * 3, device=device)
    _check(logits, *params)


def test_neg_inf_logits(device: str, gen: torch.Generator) -> None:
    """Banned tokens at -inf never win and do not poison the normalizer."""
    logits = torch.randn(4, 64, generator=gen)
    logits[:, ::3] = float("-inf")
    params = _params(4, 64, gen, device)
    _check(logits.to(device), *params)


def test_same_noise_at_same_position(device: str, gen: torch.Generator) -> None:
    """The draw depends on (seed, position, logits) only, not on the row's batch slot."""
    logits = torch.randn(1, 50, generator=gen).repeat(3, 1).to(device)
    temperature = torch.full((3,), 1.0, device=device)
    top_k = torch.zeros(3, dtype=torch.int32, device=device)
    top_p = torch.ones(3, device=device)
    seeds = torch.tensor([7, 7, 8], device=device)
    positions = torch.tensor([11, 11, 11], device=device)
    tokens, _ = sample_triton(logits, temperature, top_k, top_p, seeds, positions)
    assert tokens[0] == tokens[1]
    _check(logits, temperature, top_k, top_p, seeds, positions)
