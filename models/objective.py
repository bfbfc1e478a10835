"""The joint training objective: AR cross-entropy on the clean sequence plus a weighted
masked-diffusion loss on a noisy copy split into blocks.

One forward sees [clean (S) | noisy (S)] per sequence. A clean token is causal over the clean
half. A noisy token of block b sees the clean tokens before block b and its whole noisy block
(bidirectional), exactly what a draft / denoise chunk sees at decode time with the clean
prefix in the cache. Masked positions are scored against the token at the same position (no
shift) and weighted by 1/t, t being the block's masked fraction.

Each noisy block follows one of three patterns:
  random: a fraction t ~ U(0.001, 1) of its tokens masked (the diffusion objective);
  seed:   first token clean, the rest masked (the linear-speculation / diffusion draft);
  all:    every token masked (the quadratic-speculation sub-block after a verified prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.batch import ChunkBatch
from models.transformer import TriModeLM


@dataclass(frozen=True)
class ObjectiveConfig:
    diffusion_weight: float = 0.3
    block_lengths: tuple[int, ...] = (4, 8, 16)
    pattern_probs: tuple[float, float, float] = (0.4, 0.3, 0.3)  # random, seed, all
    min_mask_ratio: float = 0.001

    def __post_init__(self) -> None:
        if abs(sum(self.pattern_probs) - 1.0) > 1e-6:
            raise ValueError(f"pattern_probs must sum to 1, got {self.pattern_probs}")


def joint_batch(num_seqs: int, seq_len: int, block: int) -> ChunkBatch:
    """The visibility description of [clean | noisy] for num_seqs sequences of seq_len."""
    if seq_len % block:
        raise ValueError(f"seq_len {seq_len} is not a multiple of block length {block}")
    i = torch.arange(seq_len, dtype=torch.int32)
    block_start = i - i % block
    causal = torch.cat([i, block_start - 1])
    lo = torch.cat([torch.zeros_like(i), seq_len + block_start])
    hi = torch.cat([torch.zeros_like(i), seq_len + block_start + block])
    positions = torch.cat([i, i]).long()
    t = 2 * seq_len
    return ChunkBatch(
        tokens=torch.empty(0, dtype=torch.long),  # filled per step
        positions=positions.repeat(num_seqs),
        cu_seqlens=torch.arange(num_seqs + 1, dtype=torch.int32) * t,
        causal_limit=causal.repeat(num_seqs), block_lo=lo.repeat(num_seqs),
        block_hi=hi.repeat(num_seqs),
        context_lens=torch.zeros(num_seqs, dtype=torch.int32),
        block_tables=torch.full((num_seqs, 1), -1, dtype=torch.int32),
        max_chunk_len=t, max_context_len=0)


def noise_blocks(clean: torch.Tensor, block: int, mask_id: int, cfg: ObjectiveConfig,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copy of clean [N, S] and the per-token loss weight (1/t on masked, else 0)."""
    n, s = clean.shape
    nb = s // block
    pattern = torch.multinomial(torch.tensor(cfg.pattern_probs), n * nb, replacement=True,
                                generator=gen).view(n, nb, 1)
    t = torch.rand(n, nb, 1, generator=gen) * (1 - cfg.min_mask_ratio) + cfg.min_mask_ratio
    masked = torch.rand(n, nb, block, generator=gen) < t
    offset = torch.arange(block).view(1, 1, block)
    masked = torch.where(pattern == 1, offset > 0, masked)
    masked = torch.where(pattern == 2, torch.ones_like(masked), masked)
    ratio = masked.float().mean(dim=2, keepdim=True).clamp(min=1.0 / block)
    weight = (masked.float() / ratio).view(n, s)
    noisy = torch.where(masked.view(n, s), mask_id, clean)
    return noisy, weight


def joint_loss(model: TriModeLM, seqs: torch.Tensor, ar_rows: torch.Tensor,
               cfg: ObjectiveConfig, gen: torch.Generator, block: int
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """seqs [N, S]: real text, or the model's own greedy continuations (self-distillation).
    ar_rows [N] bool: rows whose AR loss counts (real text only: training AR on its own
    greedy output would only sharpen it). Every row gets the diffusion loss."""
    n, s = seqs.shape
    noisy, weight = noise_blocks(seqs, block, model.config.mask_token_id, cfg, gen)
    batch = joint_batch(n, s, block)
    batch.tokens = torch.cat([seqs, noisy], dim=1).reshape(-1)
    device = model.lm_head.weight.device
    batch, seqs, weight, ar_rows = (batch.to(device), seqs.to(device), weight.to(device),
                                    ar_rows.to(device))
    logits = model(batch).logits.view(n, 2 * s, -1)
    vocab = logits.shape[-1]
    ar_logits = logits[ar_rows, : s - 1]
    ar = F.cross_entropy(ar_logits.reshape(-1, vocab), seqs[ar_rows, 1:].reshape(-1))
    token_ce = F.cross_entropy(logits[:, s:].reshape(-1, vocab), seqs.reshape(-1),
                               reduction="none")
    diff = (token_ce * weight.reshape(-1)).sum() / weight.numel()
    loss = ar + cfg.diffusion_weight * diff
    return loss, {"loss": loss.item(), "ar": ar.item(), "diffusion": diff.item()}
