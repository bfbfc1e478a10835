"""The Triton programs of paged attention (the launcher is kernels/attention_triton.py).

Tiling (after vLLM's unified Triton attention and FlashAttention-2):
  - a program owns BLOCK_Q query tokens of one chunk times the G query heads that share one
    KV head, stacked into BLOCK_M = BLOCK_Q * G rows (padded to >= 16 for tl.dot), so every
    K/V tile is loaded once per GQA group;
  - it streams the keys in TILE_N tiles: first the cached ones through the block table,
    then the chunk's new ones straight from k/v, masked by the three visibility arrays;
    chunk keys past the last one any row of the tile can see are never loaded;
  - online softmax in fp32 (exp2, the scale folded into log2 e); P is cast to the input
    dtype for the P @ V product, as FlashAttention does;
  - when too few programs would fill the GPU (decode, small denoise batches) the key range
    is split over NUM_SPLITS programs (flash-decoding) and _combine_kernel merges the
    partial results by their log-sum-exp.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _find_chunk(cu_ptr, tile, num_chunks, BLOCK_Q: tl.constexpr):
    """The chunk owning program `tile`: chunk i owns tiles from cu[i] // BLOCK_Q + i on
    (an upper bound of its tile count that needs no host sync)."""
    lo: tl.int32 = 0
    hi = num_chunks
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(cu_ptr + mid) // BLOCK_Q + mid <= tile:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@triton.jit
def _attention_kernel(
    out_ptr, part_acc_ptr, part_ml_ptr,
    q_ptr, k_ptr, v_ptr, k_cache_ptr, v_cache_ptr,
    cu_ptr, limit_ptr, lo_ptr, hi_ptr, ctx_ptr, table_ptr,
    num_chunks, qk_scale, seg_len,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_cb, stride_cs, stride_ch, stride_table,
    G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_Q: tl.constexpr,
    BLOCK_M: tl.constexpr, TILE_N: tl.constexpr, PAGE: tl.constexpr,
    NUM_SPLITS: tl.constexpr, HAS_CACHE: tl.constexpr, ONE_TILE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    if ONE_TILE:  # every chunk fits one tile: program i is chunk i
        chunk = tile
        q_start = 0
    else:
        chunk = _find_chunk(cu_ptr, tile, num_chunks, BLOCK_Q)
        q_start = (tile - (tl.load(cu_ptr + chunk) // BLOCK_Q + chunk)) * BLOCK_Q
    chunk_start = tl.load(cu_ptr + chunk)
    chunk_len = tl.load(cu_ptr + chunk + 1) - chunk_start
    if q_start >= chunk_len:
        return

    # Rows: BLOCK_Q query tokens x G heads of this KV head; q_idx is chunk-relative.
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_idx = q_start + offs_m // G
    head = kv_head * G + offs_m % G
    row_ok = (offs_m < BLOCK_Q * G) & (q_idx < chunk_len)
    d_ok = offs_d < HEAD_DIM
    tok = (chunk_start + q_idx).to(tl.int64)  # [BLOCK_M] flat token index
    q = tl.load(q_ptr + tok[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # [BLOCK_M, BLOCK_D]
    limit = tl.load(limit_ptr + tok, mask=row_ok, other=-1)
    blo = tl.load(lo_ptr + tok, mask=row_ok, other=0)
    bhi = tl.load(hi_ptr + tok, mask=row_ok, other=0)
    # Chunk keys at or past chunk_hi are seen by no row of this tile.
    chunk_hi = tl.minimum(tl.max(tl.maximum(limit + 1, bhi), axis=0), chunk_len)

    ctx = chunk_len * 0  # a tensor either way, for tl.minimum / tl.maximum below
    if HAS_CACHE:
        ctx = tl.load(ctx_ptr + chunk)
    # Key range of this program in [0, ctx + chunk_hi): cached keys first, then the chunk's.
    seg_lo = 0
    seg_hi = ctx + chunk_hi
    if NUM_SPLITS > 1:
        seg_lo = split * seg_len
        seg_hi = tl.minimum(seg_lo + seg_len, seg_hi)

    # m starts finite so that a row with every score masked keeps exp2(-inf - m) = 0.
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    table = table_ptr + chunk.to(tl.int64) * stride_table
    # Two key sources, unrolled at compile time (each loop pipelines on its own): the cached
    # keys through the block table, then the chunk's new keys, masked by visibility.
    for source in tl.static_range(2):
        if source == 0:
            lo_key = seg_lo
            hi_key = tl.minimum(seg_hi, ctx)  # empty without a cache (ctx = 0)
        else:
            lo_key = tl.maximum(seg_lo, ctx)
            hi_key = seg_hi
        for start in range(lo_key, hi_key, TILE_N):
            offs_n = start + tl.arange(0, TILE_N)  # [TILE_N] key index, cache first
            n_ok = offs_n < hi_key
            if source == 0:
                page = tl.load(table + offs_n // PAGE, mask=n_ok, other=0)
                # A hole (-1) inside the context reads page 0, as the reference does.
                k_off = (tl.maximum(page, 0).to(tl.int64) * stride_cb
                         + (offs_n % PAGE) * stride_cs + kv_head * stride_ch)
                v_off = k_off
                k_base, v_base = k_cache_ptr, v_cache_ptr
                visible = n_ok[None, :]
            else:
                kk = offs_n - ctx  # chunk-relative key index
                key_tok = (chunk_start + kk).to(tl.int64)
                k_off = key_tok * stride_kt + kv_head * stride_kh
                v_off = key_tok * stride_vt + kv_head * stride_vh
                k_base, v_base = k_ptr, v_ptr
                visible = n_ok[None, :] & ((kk[None, :] <= limit[:, None]) | (
                    (blo[:, None] <= kk[None, :]) & (kk[None, :] < bhi[:, None])))
            k = tl.load(k_base + k_off[None, :] + offs_d[:, None],
                        mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # [BLOCK_D, TILE_N]
            v = tl.load(v_base + v_off[:, None] + offs_d[None, :],
                        mask=n_ok[:, None] & d_ok[None, :], other=0.0)  # [TILE_N, BLOCK_D]
            s = tl.dot(q, k.to(q.dtype), input_precision=DOT_PRECISION) * qk_scale
            s = tl.where(visible, s, float("-inf"))  # [BLOCK_M, TILE_N], log2 units
            # Online softmax: rescale what was summed so far to the new row maximum.
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.math.exp2(m_i - m_new)
            p = tl.math.exp2(s - m_new[:, None])  # masked scores are -inf: p = 0
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype),
                                                input_precision=DOT_PRECISION)
            m_i = m_new

    if NUM_SPLITS == 1:
        out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
        tl.store(out_ptr + tok[:, None] * stride_ot + head[:, None] * stride_oh + offs_d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    else:
        # Partials: acc [T, H, S, BLOCK_D] and (m, l) [T, H, S, 2], fp32, unnormalized.
        part = (tok * (tl.num_programs(1) * G) + head) * NUM_SPLITS + split  # [BLOCK_M]
        tl.store(part_acc_ptr + part[:, None] * BLOCK_D + offs_d[None, :], acc,
                 mask=row_ok[:, None])
        tl.store(part_ml_ptr + part * 2, m_i, mask=row_ok)
        tl.store(part_ml_ptr + part * 2 + 1, l_i, mask=row_ok)


@triton.jit
def _combine_kernel(out_ptr, part_acc_ptr, part_ml_ptr, stride_ot, stride_oh,
                    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                    NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr):
    """Merge the NUM_SPLITS partial results of one (token, head) by log-sum-exp."""
    tok = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    base = (tok * tl.num_programs(1) + head) * NUM_SPLITS
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < NUM_SPLITS
    m = tl.load(part_ml_ptr + (base + offs_s) * 2, mask=s_ok, other=float("-inf"))
    norm = tl.load(part_ml_ptr + (base + offs_s) * 2 + 1, mask=s_ok, other=0.0)
    w = tl.math.exp2(m - tl.max(m, axis=0))  # [BLOCK_S]
    total = tl.sum(w * norm, axis=0)
    acc = tl.load(part_acc_ptr + (base + offs_s)[:, None] * BLOCK_D + offs_d[None, :],
                  mask=s_ok[:, None], other=0.0)  # [BLOCK_S, BLOCK_D]
    out = tl.sum(acc * w[:, None], axis=0) / tl.where(total > 0.0, total, 1.0)
    tl.store(out_ptr + tok * stride_ot + head * stride_oh + offs_d,
             out.to(out_ptr.dtype.element_ty), mask=offs_d < HEAD_DIM)
