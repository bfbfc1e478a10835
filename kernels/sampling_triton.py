"""Sampling and confidence over the vocabulary without materializing probabilities.

One program per row streams the row in BLOCK_V tiles:
  1. max, softmax normalizer Z and the order keys of x = logits / T (an order key is the
     fp32 bit pattern mapped to an unsigned integer that increases with the value);
  2. top-k (0 < k < V) and top-p (p < 1) thresholds by radix select on the 32-bit key:
     both are "the largest key c with F(c) >= target", F(c) = count(key >= c) >= k for
     top-k and F(c) = mass(key >= c) >= p * Z for top-p (the latter is the reference's
     "keep while the mass before a sorted position is < p", ties included). Each pass
     fixes 4 bits by evaluating F at 16 candidate keys at once: 8 passes per threshold,
     exact, so every value tied with the threshold is kept, as the reference keeps it;
  3. one pass over the kept values: their normalizer, and the argmax of x + Gumbel noise
     (x alone for greedy rows), ties to the lowest index.
Rows without top-k/top-p cost two passes. We chose this over a sort (torch.topk outside the
kernel) to keep the sampler one launch with no [R, V] temporaries; the select passes
re-read the row from L2. top_p >= 1 is off, here as in the reference.
The Gumbel noise is the reference's lowbias32 hash of (seed, position, token id), bit for
bit in uint32 (kernels/sampling_ref.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import buffers


@triton.jit
def _hash32(x):  # uint32 -> uint32, lowbias32
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _row_key(seed, position):
    h = _hash32(position.to(tl.uint32))
    h = _hash32(h ^ (seed >> 32).to(tl.uint32))
    return _hash32(h ^ seed.to(tl.uint32))


@triton.jit
def _gumbel(row_key, token):  # token: int tensor -> fp32 standard Gumbel noise
    bits = _hash32(row_key + token.to(tl.uint32) * 0x9E3779B9)
    u = ((bits >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)  # strictly inside (0, 1)
    return -tl.log(-tl.log(u))


@triton.jit
def _load_scaled(base, start, vocab, temp, BLOCK_V: tl.constexpr):
    """x = logits / T (IEEE division, as torch), its int64 order key, in-range mask."""
    offs = start + tl.arange(0, BLOCK_V)
    ok = offs < vocab
    raw = tl.load(base + offs, mask=ok, other=float("-inf")).to(tl.float32)
    x = tl.math.div_rn(raw, temp) + 0.0  # + 0.0 turns -0.0 into +0.0: one key per value
    bits = x.to(tl.int32, bitcast=True).to(tl.int64)
    # Order key: unsigned 32-bit, increasing with the float value.
    key = tl.where(bits < 0, -1 - bits, bits + 2147483648)
    return offs, ok, x, key


@triton.jit
def _radix_select(base, vocab, temp, m, target, USE_MASS: tl.constexpr, BLOCK_V: tl.constexpr):
    """Largest order key c with F(c) >= target; F(c) sums 1 (count) or exp(x - m) (mass)
    over the row's keys >= c. F(0) >= target must hold (all of the row)."""
    digits = tl.arange(0, 16)
    prefix = tl.zeros([], tl.int64)
    for step in tl.static_range(8):
        shift = 28 - 4 * step  # constexpr: step is unrolled
        cand = prefix + (digits.to(tl.int64) << shift)  # [16], F(cand) decreases along it
        f = tl.zeros([16], tl.float32)
        for start in range(0, vocab, BLOCK_V):
            offs, ok, x, key = _load_scaled(base, start, vocab, temp, BLOCK_V)
            if USE_MASS:  # noqa: SIM108 - a constexpr branch, compiled out
                w = tl.where(ok, tl.exp(x - m), 0.0)
            else:
                w = ok.to(tl.float32)  # counts stay exact in fp32 below 2**24
            hit = key[:, None] >= cand[None, :]  # [BLOCK_V, 16]
            f += tl.sum(tl.where(hit, w[:, None], 0.0), axis=0)
        j = tl.max(tl.where(f >= target, digits, 0), axis=0)
        prefix += j.to(tl.int64) << shift
    return prefix


@triton.jit
def _sample_kernel(
    tok_out, prob_out, logits_ptr, temp_ptr, top_k_ptr, top_p_ptr, seed_ptr, pos_ptr,
    stride_r, vocab, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_r
    temp = tl.load(temp_ptr + row).to(tl.float32)
    is_greedy = temp <= 0.0
    temp = tl.where(is_greedy, 1.0, temp)
    top_k = tl.load(top_k_ptr + row).to(tl.int64)
    top_p = tl.load(top_p_ptr + row).to(tl.float32)

    # Pass 1: row max and normalizer (per lane, merged at the end).
    m_lane = tl.full([BLOCK_V], float("-inf"), tl.float32)
    z_lane = tl.zeros([BLOCK_V], tl.float32)
    for start in range(0, vocab, BLOCK_V):
        offs, ok, x, key = _load_scaled(base, start, vocab, temp, BLOCK_V)
        m_new = tl.maximum(m_lane, x)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no -inf - -inf on -inf logits
        z_lane = z_lane * tl.exp(m_lane - m_safe) + tl.exp(x - m_safe)
        m_lane = m_new
    m = tl.max(m_lane, axis=0)
    z = tl.sum(z_lane * tl.exp(m_lane - m), axis=0)
    threshold = tl.zeros([], tl.int64)  # keep everything

    if (top_k > 0) & (top_k < vocab):
        threshold = _radix_select(base, vocab, temp, m, top_k.to(tl.float32), False, BLOCK_V)
    if top_p < 1.0:
        p_cut = _radix_select(base, vocab, temp, m, top_p * z, True, BLOCK_V)
        threshold = tl.maximum(threshold, p_cut)

    # Final pass: normalizer of the kept values, argmax of the (noisy) scores.
    row_key = _row_key(tl.load(seed_ptr + row).to(tl.int64), tl.load(pos_ptr + row))
    z_kept = tl.zeros([BLOCK_V], tl.float32)
    best_score = float("-inf")
    best_tok = 0
    best_x = 0.0
    for start in range(0, vocab, BLOCK_V):
        offs, ok, x, key = _load_scaled(base, start, vocab, temp, BLOCK_V)
        kept = ok & (key >= threshold)
        z_kept += tl.where(kept, tl.exp(x - m), 0.0)
        noise = tl.where(is_greedy, 0.0, _gumbel(row_key, offs))
        score = tl.where(kept, x + noise, float("-inf"))
        tile_best = tl.max(score, axis=0)
        tile_tok = tl.min(tl.where(score == tile_best, offs, vocab), axis=0)  # lowest index
        if tile_best > best_score:  # strict: an earlier tile wins ties
            best_score = tile_best
            best_tok = tile_tok
            best_x = tl.sum(tl.where(offs == tile_tok, x, 0.0), axis=0)
    tl.store(tok_out + row, best_tok.to(tl.int64))
    tl.store(prob_out + row, tl.exp(best_x - m) / tl.sum(z_kept, axis=0))


def sample_triton(
    logits: torch.Tensor,  # [R, V]
    temperature: torch.Tensor,  # [R] float; 0 = greedy
    top_k: torch.Tensor,  # [R] int; 0 = off
    top_p: torch.Tensor,  # [R] float; 1.0 = off
    seeds: torch.Tensor,  # [R] int64
    positions: torch.Tensor,  # [R] int64, absolute position of the token being chosen
) -> tuple[torch.Tensor, torch.Tensor]:  # tokens [R] int64, probability [R] float32
    if logits.dim() != 2:
        raise ValueError(f"sample: logits must be [R, V], got {tuple(logits.shape)}")
    rows, vocab = logits.shape
    for name, t in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p),
                    ("seeds", seeds), ("positions", positions)):
        if t.shape != (rows,):
            raise ValueError(f"sample: {name} {tuple(t.shape)} must be [{rows}]")
    if vocab >= 2**31:
        raise ValueError(f"sample: vocabulary of {vocab} does not fit int32 indices")
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    tokens = buffers.empty((rows,), torch.int64, logits.device)
    probs = buffers.empty((rows,), torch.float32, logits.device)
    if rows:
        # The select passes hold [BLOCK_V, 16] tiles: 1024 keeps them in registers.
        block = min(1024, triton.next_power_of_2(vocab))
        _sample_kernel[(rows,)](
            tokens, probs, logits, temperature, top_k, top_p, seeds, positions,
            logits.stride(0), vocab, BLOCK_V=block, num_warps=8 if block >= 1024 else 4)
    return tokens, probs
