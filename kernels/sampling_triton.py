"""Sampling and confidence over the vocabulary without materializing probabilities.

One program per row streams the row in BLOCK_V tiles:
  1. max, softmax normalizer Z and the range of order keys of x = logits / T;
  2. top-k (k > 0): bisection on the order key for the k-th largest value, one counting
     pass per step; top-p (p < 1): bisection for the smallest value whose strictly-greater
     mass is under p (the reference's "mass before < p" rule), one summing pass per step;
  3. one pass over the kept values: their normalizer, and argmax of x + Gumbel noise
     (x alone for greedy rows), ties to the lowest index.
The threshold is exact (32 steps at most on the 32-bit order key of fp32), so ties at the
threshold are all kept, as the reference keeps them. Rows without top-k/top-p pay two
passes; the bisection passes re-read a row from L1/L2. We chose this over a sort
(torch.topk outside the kernel) because it keeps the whole sampler one launch with no
[R, V] temporaries. top_p >= 1 means off (the reference's cumsum may round the last few
ulps of mass to 1.0 and drop tail tokens of probability ~1e-8; we keep them).
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
def _count_at_least(base, vocab, temp, c, BLOCK_V: tl.constexpr):
    n = tl.zeros([BLOCK_V], tl.int32)
    for start in range(0, vocab, BLOCK_V):
        offs, ok, x, key = _load_scaled(base, start, vocab, temp, BLOCK_V)
        n += (ok & (key >= c)).to(tl.int32)
    return tl.sum(n, axis=0)


@triton.jit
def _mass_above(base, vocab, temp, c, m, BLOCK_V: tl.constexpr):
    s = tl.zeros([BLOCK_V], tl.float32)
    for start in range(0, vocab, BLOCK_V):
        offs, ok, x, key = _load_scaled(base, start, vocab, temp, BLOCK_V)
        s += tl.where(ok & (key > c), tl.exp(x - m), 0.0)
    return tl.sum(s, axis=0)


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

    # Pass 1: row max, normalizer (per lane, merged at the end) and key range.
    m_lane = tl.full([BLOCK_V], float("-inf"), tl.float32)
    z_lane = tl.zeros([BLOCK_V], tl.float32)
    key_lo = tl.full([BLOCK_V], 4294967296, tl.int64)
    key_hi = tl.full([BLOCK_V], -1, tl.int64)
    for start in range(0, vocab, BLOCK_V):
        offs, ok, x, key = _load_scaled(base, start, vocab, temp, BLOCK_V)
        m_new = tl.maximum(m_lane, x)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no -inf - -inf on -inf logits
        z_lane = z_lane * tl.exp(m_lane - m_safe) + tl.exp(x - m_safe)
        m_lane = m_new
        key_lo = tl.minimum(key_lo, tl.where(ok, key, 4294967296))
        key_hi = tl.maximum(key_hi, tl.where(ok, key, -1))
    m = tl.max(m_lane, axis=0)
    z = tl.sum(z_lane * tl.exp(m_lane - m), axis=0)
    threshold = tl.min(key_lo, axis=0)  # keep everything
    top = tl.max(key_hi, axis=0)

    if (top_k > 0) & (top_k < vocab):
        # Largest key c with count(key >= c) >= k: the k-th largest value.
        lo = threshold  # count(key >= lo) = vocab >= k
        hi = top + 1  # count(key >= hi) = 0 < k
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _count_at_least(base, vocab, temp, mid, BLOCK_V) >= top_k:
                lo = mid
            else:
                hi = mid
        threshold = lo
    if top_p < 1.0:
        # Smallest key c with mass(key > c) < p * Z: the reference's last kept value.
        lo = threshold - 1  # keys below the current threshold are gone already
        hi = top  # mass(key > top) = 0 < p * Z
        pz = top_p * z
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _mass_above(base, vocab, temp, mid, m, BLOCK_V) < pz:
                hi = mid
            else:
                lo = mid
        threshold = tl.maximum(threshold, hi)

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
        # One tile holds the rows of the vocabularies we ship (4k); larger ones stream.
        block = min(4096, triton.next_power_of_2(vocab))
        _sample_kernel[(rows,)](
            tokens, probs, logits, temperature, top_k, top_p, seeds, positions,
            logits.stride(0), vocab, BLOCK_V=block, num_warps=8 if block >= 2048 else 4)
    return tokens, probs
