"""Measurements of a model during training, without the engine: batched greedy AR with a
simple contiguous cache, and draft/AR agreement by offset inside a block.

Agreement at offset k: how often the one-pass draft at position p + k equals the token AR
greedy decoding puts there, given the same prefix. `seed` drafts ([seed, MASK x (B-1)], the
linear-speculation and diffusion layout) start at the last known token; `all` drafts (B
masks after the verified prefix, the quadratic layout) start one position later.
"""

from __future__ import annotations

import torch

from kernels import dispatch
from models.batch import Chunk, ChunkBatch
from models.transformer import TriModeLM

CACHE_BLOCK = 16


def _empty_caches(model: TriModeLM, num_seqs: int, max_len: int
                  ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    cfg = model.config
    blocks_per_seq = -(-max_len // CACHE_BLOCK)
    shape = (num_seqs * blocks_per_seq, CACHE_BLOCK, model.model.layers[0].self_attn.num_kv_heads,
             cfg.head_dim)
    device = model.lm_head.weight.device
    caches = [(torch.zeros(shape, device=device), torch.zeros(shape, device=device))
              for _ in range(cfg.num_layers)]
    return caches, blocks_per_seq


def _store(caches: list[tuple[torch.Tensor, torch.Tensor]], new_k: torch.Tensor,
           new_v: torch.Tensor, slots: torch.Tensor) -> None:
    for layer, (k_cache, v_cache) in enumerate(caches):
        dispatch.store_kv(k_cache, v_cache, new_k[layer], new_v[layer], slots)


@torch.no_grad()
def greedy_continue(model: TriModeLM, prompts: torch.Tensor, num_new: int) -> torch.Tensor:
    """prompts [N, P] (equal lengths) -> [N, num_new] greedy AR tokens."""
    n, p = prompts.shape
    device = model.lm_head.weight.device
    caches, per_seq = _empty_caches(model, n, p + num_new)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(n)]

    def slots(start: int, count: int) -> torch.Tensor:
        pos = torch.arange(start, start + count)
        return torch.cat([torch.tensor(tables[i])[pos // CACHE_BLOCK] * CACHE_BLOCK
                          + pos % CACHE_BLOCK for i in range(n)]).to(device)

    chunks = [Chunk.causal(prompts[i].tolist(), 0, 0, tables[i]) for i in range(n)]
    last_rows = (torch.arange(1, n + 1) * p - 1).to(device)
    out = model(ChunkBatch.from_chunks(chunks, device), caches, last_rows)
    _store(caches, out.new_k, out.new_v, slots(0, p))
    tokens = [out.logits.argmax(-1)]
    for step in range(1, num_new):
        pos = p + step - 1
        chunks = [Chunk.causal([int(tokens[-1][i])], pos, pos, tables[i]) for i in range(n)]
        out = model(ChunkBatch.from_chunks(chunks, device), caches)
        _store(caches, out.new_k, out.new_v, slots(pos, 1))
        tokens.append(out.logits.argmax(-1))
    return torch.stack(tokens, dim=1).cpu()


@torch.no_grad()
def draft_agreement(model: TriModeLM, windows: torch.Tensor, block: int
                    ) -> dict[str, list[float] | float]:
    """windows [N, P]: prefixes ending with the seed token. Returns agreement by offset for
    both draft layouts and the mean tokens per linear-speculation iteration (accepted + 1)."""
    n, p = windows.shape
    mask_id = model.config.mask_token_id
    ar = greedy_continue(model, windows, block)  # ar[:, j] sits at position p + j
    chunks_seed, chunks_all = [], []
    for i in range(n):
        prefix = windows[i].tolist()
        seed_block = [prefix[-1]] + [mask_id] * (block - 1)
        # prefix causal, then the draft block: sees the prefix before it, bidirectional inside
        chunks_seed.append(_prefix_then_block(prefix[:-1], seed_block))
        chunks_all.append(_prefix_then_block(prefix, [mask_id] * block))
    device = model.lm_head.weight.device
    seed_logits = model(ChunkBatch.from_chunks(chunks_seed, device)).logits
    all_logits = model(ChunkBatch.from_chunks(chunks_all, device)).logits
    # offsets 1..B-1 of the seed layout sit at positions p..p+B-2; the all-mask block at p..
    seed_draft = seed_logits.view(n, p - 1 + block, -1)[:, p:].argmax(-1).cpu()
    all_draft = all_logits.view(n, p + block, -1)[:, p:].argmax(-1).cpu()
    seed_match = seed_draft == ar[:, : block - 1]
    all_match = all_draft == ar[:, :block]
    accepted = seed_match.long().cumprod(dim=1).sum(dim=1).float()
    # quadratic: the first mask is the bonus position, drafts are masks 1.. (positions p+1..)
    quad_accepted = all_match[:, 1:].long().cumprod(dim=1).sum(dim=1).float()
    return {
        "seed_offsets": seed_match.float().mean(0).tolist(),
        "all_offsets": all_match.float().mean(0).tolist(),
        "linear_tokens_per_iter": accepted.mean().item() + 1,
        "quadratic_tokens_per_step": quad_accepted.mean().item() + 1,
    }


def _prefix_then_block(prefix: list[int], block: list[int]) -> Chunk:
    n, b = len(prefix), len(block)
    return Chunk(prefix + block, range(n + b), list(range(n)) + [n - 1] * b,
                 [0] * n + [n] * b, [0] * n + [n + b] * b)
