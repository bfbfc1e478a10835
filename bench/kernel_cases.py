"""Benchmark cases: each kernel on the default model's shapes and an 8B-shaped config, with
its Triton launcher, its reference and the best plain-torch baselines we know.

Attention baselines run on the same visible keys, gathered into contiguous [B, KVH, L, D]
tensors beforehand (the gather is not timed: that favours torch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from kernels import attention_ref, random_batch
from kernels.accept_ref import accept_reference
from kernels.kv_store_ref import store_kv_reference
from kernels.norm_ref import rmsnorm_reference
from kernels.rope_ref import rope_reference
from kernels.sampling_ref import sample_reference


@dataclass(frozen=True)
class ModelShape:
    name: str
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden: int
    vocab: int


TINY = ModelShape("tiny", 8, 4, 32, 256, 4096)
LLAMA8B = ModelShape("8b", 32, 8, 128, 4096, 131072)


@dataclass(frozen=True)
class Sizes:
    batch: int = 32
    context: int = 1024
    denoise: int = 16  # block length of a denoising chunk
    prefill: int = 512
    page: int = 16


FULL = Sizes()
DRY = Sizes(batch=2, context=40, denoise=4, prefill=24, page=16)  # --dry-run on CPU


@dataclass
class Case:
    kernel: str
    shape: str
    layout: str
    triton: Callable[[], Any]
    reference: Callable[[], Any]
    baselines: dict[str, Callable[[], Any]] = field(default_factory=dict)
    compare: Callable[[Any, Any], float] | None = None  # error of triton vs reference
    variants: dict[str, Callable[[], Any]] = field(default_factory=dict)  # timed, for tuning


def _fp32(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The reference runs on the same (half) inputs upcast: the error measured is the
    kernel's own, not the sum of two half-precision roundings."""
    return tuple(x.float() for x in xs)


def rel_err(a: torch.Tensor | tuple, b: torch.Tensor | tuple) -> float:
    """max |a - b| / max |b| over the outputs (one number per case)."""
    if isinstance(a, tuple):
        return max(rel_err(x, y) for x, y in zip(a, b, strict=True))
    diff = (a.float() - b.float()).abs().max().item()
    return diff / max(b.float().abs().max().item(), 1e-30)


def _attention(m: ModelShape, s: Sizes, layout: str, dev: torch.device, dtype: torch.dtype,
               flex: Callable | None) -> Case:
    from kernels.attention_triton import attention_triton, launch_config

    b, ctx = s.batch, s.context
    n = {"decode": 1, "denoise": s.denoise, "prefill": s.prefill}[layout]
    ctx = 0 if layout == "prefill" else ctx
    b = max(1, b // 8) if layout == "prefill" else b
    t, h, kvh, d = b * n, m.num_heads, m.num_kv_heads, m.head_dim
    nb = b * -(-ctx // s.page) + 1  # every request's blocks and block 0, which none holds
    chunk = random_batch.bidirectional(n) if layout == "denoise" else random_batch.causal(n)
    plan = random_batch.paged_plan([chunk] * b, [ctx] * b, s.page, nb, device=dev)
    tables = plan.block_tables
    q = torch.randn(t, h, d, device=dev, dtype=dtype)
    k, v = (torch.randn(t, kvh, d, device=dev, dtype=dtype) for _ in range(2))
    kc, vc = (torch.randn(nb, s.page, kvh, d, device=dev, dtype=dtype) for _ in range(2))
    scale = d ** -0.5
    # Dense baselines: every query sees all cached keys and (denoise) the whole chunk or
    # (decode, prefill) a causal prefix: one SDPA call on contiguous K/V.
    slots = (tables.long().clamp(min=0)[:, :, None] * s.page
             + torch.arange(s.page, device=dev)).view(b, -1)[:, :ctx]
    kd = torch.cat([kc.view(-1, kvh, d)[slots], k.view(b, n, kvh, d)], 1).transpose(1, 2)
    vd = torch.cat([vc.view(-1, kvh, d)[slots], v.view(b, n, kvh, d)], 1).transpose(1, 2)
    qd = q.view(b, n, h, d).transpose(1, 2).contiguous()
    kd, vd = kd.contiguous(), vd.contiguous()
    ke, ve = (x.repeat_interleave(h // kvh, dim=1) for x in (kd, vd))
    causal = layout == "prefill"  # decode: one query sees everything
    base = {
        "sdpa_gqa": lambda: F.scaled_dot_product_attention(qd, kd, vd, is_causal=causal,
                                                           scale=scale, enable_gqa=True),
        "sdpa": lambda: F.scaled_dot_product_attention(qd, ke, ve, is_causal=causal,
                                                       scale=scale),
    }
    if flex is not None and not causal:
        base["flex"] = lambda: flex(qd, kd, vd, scale=scale, enable_gqa=True)
    cfg = launch_config(t, b, kvh, h // kvh, d, n, ctx, q.device, dtype == torch.float32)
    variants = {} if layout == "prefill" else {
        f"S={splits}": (lambda splits=splits: attention_triton(q, k, v, kc, vc, plan, scale,
                                                                num_splits=splits))
        for splits in (1, 2, 4, 8)}
    return Case("attention", m.name, f"{layout} b{b} ctx{ctx} n{n} S{cfg.num_splits}",
                lambda: attention_triton(q, k, v, kc, vc, plan, scale),
                lambda: attention_ref.attention_reference(*_fp32(q, k, v, kc, vc), plan, scale),
                base, rel_err, variants)


def _rmsnorm(m: ModelShape, s: Sizes, dev: torch.device, dtype: torch.dtype) -> Case:
    from kernels.norm_triton import rmsnorm_triton

    t = s.batch * s.denoise
    x, r = (torch.randn(t, m.hidden, device=dev, dtype=dtype) for _ in range(2))
    w = torch.randn(m.hidden, device=dev, dtype=dtype)

    def fused_torch() -> tuple[torch.Tensor, torch.Tensor]:
        h = x + r
        return F.rms_norm(h, (m.hidden,), w, 1e-5), h

    return Case("rmsnorm", m.name, f"T{t} D{m.hidden}",
                lambda: rmsnorm_triton(x, w, 1e-5, r),
                # Same dtype: the reference's roundings (x + r, normed) are its semantics.
                lambda: rmsnorm_reference(x, w, 1e-5, r),
                {"reference": lambda: rmsnorm_reference(x, w, 1e-5, r),
                 "F.rms_norm": fused_torch}, rel_err)


def _rope(m: ModelShape, s: Sizes, dev: torch.device, dtype: torch.dtype) -> Case:
    from kernels.rope_triton import rope_triton

    t = s.batch * s.denoise
    q = torch.randn(t, m.num_heads, m.head_dim, device=dev, dtype=dtype)
    k = torch.randn(t, m.num_kv_heads, m.head_dim, device=dev, dtype=dtype)
    pos = torch.randint(0, s.context, (t,), device=dev)
    return Case("rope", m.name, f"T{t}", lambda: rope_triton(q, k, pos, 1e6),
                lambda: rope_reference(*_fp32(q, k), pos, 1e6),
                {"reference": lambda: rope_reference(q, k, pos, 1e6)}, rel_err)


def _store_kv(m: ModelShape, s: Sizes, dev: torch.device, dtype: torch.dtype) -> Case:
    from kernels.kv_store_triton import store_kv_triton

    t, kvh, d = s.batch * s.denoise, m.num_kv_heads, m.head_dim
    nb = -(-t // s.page) * 4
    kc, vc = (torch.randn(nb, s.page, kvh, d, device=dev, dtype=dtype) for _ in range(2))
    k, v = (torch.randn(t, kvh, d, device=dev, dtype=dtype) for _ in range(2))
    slots = torch.randperm(nb * s.page, device=dev)[:t]
    kc2, vc2 = kc.clone(), vc.clone()

    def run(fn: Callable, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fn(a, b, k, v, slots)
        return a, b

    def index_copy() -> None:
        kc.view(-1, kvh, d).index_copy_(0, slots, k)
        vc.view(-1, kvh, d).index_copy_(0, slots, v)

    return Case("store_kv", m.name, f"T{t}", lambda: run(store_kv_triton, kc, vc),
                lambda: run(store_kv_reference, kc2, vc2),
                {"reference": lambda: store_kv_reference(kc, vc, k, v, slots),
                 "index_copy_": index_copy}, rel_err)


def _sample(m: ModelShape, s: Sizes, dev: torch.device, dtype: torch.dtype,
            filtered: bool) -> Case:
    from kernels.sampling_triton import sample_triton

    r, vocab = s.batch, m.vocab if s is FULL else 300
    logits = (torch.randn(r, vocab, device=dev) * 3).to(dtype)
    temp = torch.full((r,), 0.8 if filtered else 0.0, device=dev)
    top_k = torch.full((r,), 50 if filtered else 0, dtype=torch.int32, device=dev)
    top_p = torch.full((r,), 0.9 if filtered else 1.0, device=dev)
    seeds = torch.arange(r, device=dev) * 7919 + 1
    pos = torch.arange(r, device=dev) + 100
    args = (logits, temp, top_k, top_p, seeds, pos)

    def greedy_torch() -> tuple[torch.Tensor, torch.Tensor]:
        p = logits.float().softmax(-1)
        prob, tok = p.max(-1)
        return tok, prob

    base = {"reference": lambda: sample_reference(*args)}
    if not filtered:
        base["softmax+max"] = greedy_torch

    def compare(a: tuple, b: tuple) -> float:
        if not torch.equal(a[0], b[0]):
            return float("inf")  # a different token is a failure, not an error size
        return rel_err(a[1], b[1])

    return Case("sample", m.name, f"R{r} V{vocab} " + ("T0.8 k50 p0.9" if filtered else "greedy"),
                lambda: sample_triton(*args), lambda: sample_reference(*args), base, compare)


def _accept(s: Sizes, dev: torch.device) -> Case:
    from kernels.accept_triton import accept_triton

    n, b = s.batch, 16
    draft = torch.randint(0, 3, (n, b), device=dev)
    target = torch.randint(0, 3, (n, b), device=dev)
    num = torch.randint(0, b + 1, (n,), device=dev)

    def compare(a: torch.Tensor, ref: torch.Tensor) -> float:
        return 0.0 if torch.equal(a, ref) else float("inf")

    return Case("accept", "any", f"N{n} B{b}", lambda: accept_triton(draft, target, num),
                lambda: accept_reference(draft, target, num),
                {"reference": lambda: accept_reference(draft, target, num)}, compare)


def all_cases(dev: torch.device, dtype: torch.dtype, sizes: Sizes,
              flex: Callable | None = None) -> list[Case]:
    """Attention on decode / denoise first (the targets), the 8B shape before the tiny one:
    a run short of time drops the optional timings (split variants, flex) of the later ones."""
    cases = [_attention(m, sizes, layout, dev, dtype, flex)
             for layout in ("decode", "denoise") for m in (LLAMA8B, TINY)]
    cases += [_attention(m, sizes, "prefill", dev, dtype, flex) for m in (LLAMA8B, TINY)]
    for m in (TINY, LLAMA8B):
        cases += [_rmsnorm(m, sizes, dev, dtype), _rope(m, sizes, dev, dtype),
                  _store_kv(m, sizes, dev, dtype), _sample(m, sizes, dev, dtype, False),
                  _sample(m, sizes, dev, dtype, True)]
    cases.append(_accept(sizes, dev))
    return cases
