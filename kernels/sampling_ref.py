"""Sampling and confidence: per row, the chosen token and its probability.

Noise is Gumbel, drawn from a counter-based hash of (request seed, absolute position, token
id): never of batch slot or step, so a draft at position p and the verifier at p see the
same noise and every mode samples the same text (docs/ARCHITECTURE.md, decoding modes).
argmax(logits / T + gumbel) over the kept tokens is an exact draw from their softmax. The
Triton kernel computes the same hash bit for bit in uint32.
"""

from __future__ import annotations

import torch

from kernels.host_reads import can_read_back

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32), without int64 overflow."""
    lo = (x * (c & 0xFFFF)) & MASK32
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (Chris Wellons): a strong 32-bit integer mixer. int64 tensor in and out."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[R] int64 key of (seed, position) pairs."""
    seeds = seeds.long()
    h = hash32(positions.long())
    h = hash32(h ^ ((seeds >> 32) & MASK32))
    return hash32(h ^ (seeds & MASK32))


def gumbel_noise(seeds: torch.Tensor, positions: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[R, V] float32 standard Gumbel noise keyed by (seed, position, token id)."""
    keys = row_keys(seeds, positions)
    token = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)
    bits = hash32(keys[:, None] + _mul32(token, GOLDEN)[None, :])
    # 24 high bits -> a uniform strictly inside (0, 1).
    u = ((bits >> 8).float() + 0.5) * (1.0 / 16777216.0)
    return -torch.log(-torch.log(u))


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
                  ) -> torch.Tensor:
    """Set to -inf every logit outside a row's top-k and top-p sets (0 / 1.0 = off)."""
    vocab = logits.shape[-1]
    sorted_vals, _ = logits.sort(dim=-1, descending=True)
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab).long()
    kth = sorted_vals.gather(1, (k - 1)[:, None])
    # top-p: keep the smallest head of the sorted list whose mass reaches p.
    probs = sorted_vals.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    # p >= 1 is off: fp32 cumsum can round the mass before the last tokens up to 1.0, which
    # would drop them, and only where this function runs (off the CPU always, on the CPU
    # when another row of the batch filters): a draw that depends on the batch and device.
    keep_sorted = (mass_before < top_p[:, None]) | (top_p[:, None] >= 1.0)
    num_keep = keep_sorted.sum(dim=-1).clamp(min=1)
    pth = sorted_vals.gather(1, (num_keep - 1)[:, None])
    threshold = torch.maximum(kth, pth)
    return logits.masked_fill(logits < threshold, float("-inf"))


def sample_reference(
    logits: torch.Tensor,  # [R, V]
    temperature: torch.Tensor,  # [R] float; 0 = greedy
    top_k: torch.Tensor,  # [R] int; 0 = off
    top_p: torch.Tensor,  # [R] float; 1.0 = off
    seeds: torch.Tensor,  # [R] int64
    positions: torch.Tensor,  # [R] int64, absolute position of the token being chosen
) -> tuple[torch.Tensor, torch.Tensor]:  # tokens [R] int64, probability [R] float32
    x = logits.float()
    greedy = temperature <= 0
    t = torch.where(greedy, 1.0, temperature.float())[:, None]
    x = x / t
    # Filter and noise are skipped when no row needs them only where that check is free (the
    # CPU: 64 greedy rows of 4,096 take 0.65 ms with the skips, 23 ms without them, one thread:
    # bench/sync_free_cost.py, 2026-12-04). Off the CPU both always run: for a row with top-k
    # and top-p off the filter keeps every logit, and greedy rows take x, not x + noise, so the
    # tokens and probabilities are the same bits either way, with no host read to sync on.
    needs_filter = (top_k > 0) | (top_p < 1.0)
    if not can_read_back(needs_filter) or bool(needs_filter.any()):
        x = filter_logits(x, top_k, top_p)
    scores = x
    if not can_read_back(greedy) or not bool(greedy.all()):
        noise = gumbel_noise(seeds, positions, x.shape[-1])
        scores = torch.where(greedy[:, None], x, x + noise)
    tokens = scores.argmax(dim=-1)
    prob = x.softmax(dim=-1).gather(1, tokens[:, None])[:, 0]
    return tokens, prob
