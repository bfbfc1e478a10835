"""The one entry point to every kernel: Triton on CUDA tensors, the torch reference on CPU.

TANDEM_KERNELS=triton forces Triton (through TRITON_INTERPRET=1 on CPU), TANDEM_KERNELS=torch
forces the references. models/ and engine/ call only these functions.
"""

from __future__ import annotations

import os

import torch

from kernels.accept_ref import accept_reference
from kernels.attention_ref import AttentionPlan, attention_reference
from kernels.kv_store_ref import store_kv_reference
from kernels.norm_ref import rmsnorm_reference
from kernels.rope_ref import rope_reference
from kernels.sampling_ref import sample_reference

_CHOICES = ("auto", "triton", "torch")


def kernel_mode() -> str:
    mode = os.environ.get("TANDEM_KERNELS", "auto").lower()
    if mode not in _CHOICES:
        raise ValueError(f"TANDEM_KERNELS={mode!r}: expected one of {', '.join(_CHOICES)}")
    return mode


def use_triton(x: torch.Tensor) -> bool:
    mode = kernel_mode()
    return mode == "triton" or (mode == "auto" and x.is_cuda)


_interpreter_checked = False


def _prepare_triton() -> None:
    """Without a GPU, Triton runs only in its interpreter, which triton reads when a kernel
    module is imported: default TRITON_INTERPRET=1 before the first one is."""
    global _interpreter_checked
    if not _interpreter_checked:
        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")
        _interpreter_checked = True


def prepare_attention(cu_seqlens: torch.Tensor, causal_limit: torch.Tensor,
                      block_lo: torch.Tensor, block_hi: torch.Tensor,
                      context_lens: torch.Tensor, block_tables: torch.Tensor,
                      max_chunk_len: int, max_context_len: int, window: int | None = None,
                      positions: torch.Tensor | None = None) -> AttentionPlan:
    """window: a sliding window over positions (needs positions [T]); None = full."""
    if window is not None and positions is None:
        raise ValueError("a sliding window needs the tokens' positions")
    return AttentionPlan(cu_seqlens, causal_limit, block_lo, block_hi, context_lens,
                         block_tables, max_chunk_len, max_context_len, window, positions)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              k_cache: torch.Tensor | None, v_cache: torch.Tensor | None,
              plan: AttentionPlan, scale: float) -> torch.Tensor:
    # The Triton kernel has no sliding window yet: a windowed model runs the reference (on
    # CUDA too, through SDPA), correct and slower.
    if use_triton(q) and plan.window is None:
        _prepare_triton()
        from kernels.attention_triton import attention_triton
        return attention_triton(q, k, v, k_cache, v_cache, plan, scale)
    return attention_reference(q, k, v, k_cache, v_cache, plan, scale)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float,
            residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    # Autograd runs through the reference only: the kernels are inference paths.
    if use_triton(x) and not torch.is_grad_enabled():
        _prepare_triton()
        from kernels.norm_triton import rmsnorm_triton
        return rmsnorm_triton(x, weight, eps, residual)
    return rmsnorm_reference(x, weight, eps, residual)


def rope(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, theta: float,
         inv_freq: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """inv_freq: [D/2] fp32 scaled frequencies (models/rope_scaling.py); None = from theta."""
    if use_triton(q) and not torch.is_grad_enabled():
        _prepare_triton()
        from kernels.rope_triton import rope_triton
        return rope_triton(q, k, positions, theta, inv_freq)
    return rope_reference(q, k, positions, theta, inv_freq)


def store_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slots: torch.Tensor) -> None:
    if use_triton(k):
        _prepare_triton()
        from kernels.kv_store_triton import store_kv_triton
        return store_kv_triton(k_cache, v_cache, k, v, slots)
    return store_kv_reference(k_cache, v_cache, k, v, slots)


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
           top_p: torch.Tensor, seeds: torch.Tensor, positions: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    if use_triton(logits):
        _prepare_triton()
        from kernels.sampling_triton import sample_triton
        return sample_triton(logits, temperature, top_k, top_p, seeds, positions)
    return sample_reference(logits, temperature, top_k, top_p, seeds, positions)


def accept(draft: torch.Tensor, target: torch.Tensor, num_draft: torch.Tensor) -> torch.Tensor:
    if use_triton(draft):
        _prepare_triton()
        from kernels.accept_triton import accept_triton
        return accept_triton(draft, target, num_draft)
    return accept_reference(draft, target, num_draft)
