"""The tri-mode transformer: a Mistral-shaped decoder whose forward takes a ragged batch of
chunks with explicit positions and a visibility description (models/batch.py).

Module and parameter names follow Hugging Face's MistralForCausalLM, so checkpoints load by
name and AR logits can be compared with transformers. The layers read the same at tp=1 and
tp=N: only the projections know their slice, and RowParallelLinear does the all-reduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kernels import dispatch
from kernels.attention_ref import AttentionPlan
from models.batch import ChunkBatch
from models.config import ModelConfig
from models.layers import ColumnParallelLinear, RMSNormWeight, RowParallelLinear
from models.parallel import SINGLE, TensorParallel
from models.rope_scaling import RopeFrequencies

KVCache = tuple[torch.Tensor, torch.Tensor]  # k, v: [num_blocks, block_size, KVH_local, D]


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [R, V] for the requested rows (all T rows by default)
    new_k: torch.Tensor  # [L, T, KVH_local, D] the chunk's keys, rotated; kept or not by engine
    new_v: torch.Tensor  # [L, T, KVH_local, D]


def local_heads(config: ModelConfig, tp: TensorParallel) -> tuple[int, int, int]:
    """(query heads, kv heads, first kv head) held by this rank.

    KV heads are split when there are at least tp of them, else each is replicated on the
    tp / num_kv_heads ranks whose query heads use it.
    """
    _, num_q = tp.split(config.num_heads, "num_attention_heads")
    if config.num_kv_heads >= tp.world_size:
        kv_start, num_kv = tp.split(config.num_kv_heads, "num_key_value_heads")
        return num_q, num_kv, kv_start
    if tp.world_size % config.num_kv_heads:
        raise ValueError(f"tp={tp.world_size} is not a multiple of "
                         f"num_key_value_heads={config.num_kv_heads}")
    return num_q, 1, tp.rank // (tp.world_size // config.num_kv_heads)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, tp: TensorParallel) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, kv_start = local_heads(config, tp)
        self.head_dim, self.theta = hd, config.rope_theta
        self.rope = RopeFrequencies(hd, config.rope_theta, config.rope_scaling)
        # yarn scales both q and k by its attention factor: the scores by its square.
        self.scale = hd ** -0.5 * self.rope.attention_factor ** 2
        q_start = tp.rank * self.num_heads * hd
        kv_rows = (kv_start * hd, self.num_kv_heads * hd)
        bias = config.qkv_bias
        self.q_proj = ColumnParallelLinear(d, config.num_heads * hd, q_start, self.num_heads * hd,
                                           bias=bias)
        self.k_proj = ColumnParallelLinear(d, config.num_kv_heads * hd, *kv_rows, bias=bias)
        self.v_proj = ColumnParallelLinear(d, config.num_kv_heads * hd, *kv_rows, bias=bias)
        self.o_proj = RowParallelLinear(config.num_heads * hd, d, tp, bias=config.o_bias)
        self.qkv_proj: nn.Module | None = None  # set by models/fuse.py at load time

    def forward(self, x: torch.Tensor, positions: torch.Tensor, plan: AttentionPlan,
                cache: KVCache | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = x.shape[0]  # x: [T, D]
        if self.qkv_proj is not None:  # one GEMM (models/fuse.py)
            q, k, v = self.qkv_proj(x)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(t, self.num_heads, self.head_dim)
        k = k.view(t, self.num_kv_heads, self.head_dim)
        v = v.view(t, self.num_kv_heads, self.head_dim)
        q, k = dispatch.rope(q, k, positions, self.theta, self.rope.inv_freq(q.device))
        k_cache, v_cache = cache if cache is not None else (None, None)
        out = dispatch.attention(q, k, v, k_cache, v_cache, plan, self.scale)  # [T, H, D]
        return self.o_proj(out.reshape(t, -1)), k, v


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, tp: TensorParallel) -> None:
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        start, size = tp.split(f, "intermediate_size")
        self.gate_proj = ColumnParallelLinear(d, f, start, size)
        self.up_proj = ColumnParallelLinear(d, f, start, size)
        self.down_proj = RowParallelLinear(f, d, tp)
        self.gate_up_proj: nn.Module | None = None  # set by models/fuse.py at load time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:  # one GEMM (models/fuse.py)
            gate, up = self.gate_up_proj(x)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, tp: TensorParallel) -> None:
        super().__init__()
        self.eps = config.rms_norm_eps
        self.input_layernorm = RMSNormWeight(config.hidden_size)
        self.self_attn = Attention(config, tp)
        self.post_attention_layernorm = RMSNormWeight(config.hidden_size)
        self.mlp = MLP(config, tp)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, positions: torch.Tensor,
                plan: AttentionPlan, cache: KVCache | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h, residual = dispatch.rmsnorm(x, self.input_layernorm.weight, self.eps, residual)
        h, k, v = self.self_attn(h, positions, plan, cache)
        h, residual = dispatch.rmsnorm(h, self.post_attention_layernorm.weight, self.eps,
                                       residual)
        return self.mlp(h), residual, k, v


class Backbone(nn.Module):
    def __init__(self, config: ModelConfig, tp: TensorParallel) -> None:
        super().__init__()
        # Embedding and LM head are replicated on every rank: the vocabulary of the models we
        # ship is small, and the sampler then reads whole logit rows with no gather.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_tokens.weight.shard = None  # type: ignore[attr-defined]
        self.layers = nn.ModuleList(DecoderLayer(config, tp) for _ in range(config.num_layers))
        self.norm = RMSNormWeight(config.hidden_size)


class TriModeLM(nn.Module):
    def __init__(self, config: ModelConfig, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        self.config, self.tp = config, tp
        # A window no context reaches is full attention: skip the mask work then.
        window = config.sliding_window
        self.window = window if window and window < config.max_position_embeddings else None
        self.model = Backbone(config, tp)
        self.lm_head = ColumnParallelLinear(config.hidden_size, config.vocab_size)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Tied embeddings: the LM head is the embedding (call again after assigning it)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, batch: ChunkBatch, caches: list[KVCache] | None = None,
                logits_rows: torch.Tensor | None = None) -> ModelOutput:
        """Logits for rows `logits_rows` of the flat batch (all rows when None)."""
        plan = dispatch.prepare_attention(
            batch.cu_seqlens, batch.causal_limit, batch.block_lo, batch.block_hi,
            batch.context_lens, batch.block_tables, batch.max_chunk_len, batch.max_context_len,
            self.window, batch.positions if self.window is not None else None)
        x = self.model.embed_tokens(batch.tokens)  # [T, D]
        residual = None
        new_k, new_v = [], []
        for i, layer in enumerate(self.model.layers):
            cache = caches[i] if caches is not None else None
            x, residual, k, v = layer(x, residual, batch.positions, plan, cache)
            new_k.append(k)
            new_v.append(v)
        x, _ = dispatch.rmsnorm(x, self.model.norm.weight, self.config.rms_norm_eps, residual)
        if logits_rows is not None:
            x = x[logits_rows]
        return ModelOutput(self.lm_head(x), torch.stack(new_k), torch.stack(new_v))

    def init_weights(self, seed: int = 0, std: float = 0.02) -> None:
        """Fresh weights for training from scratch (normal(0, std), norms at 1)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(".bias"):
                    p.zero_()
                elif name.endswith("layernorm.weight") or name == "model.norm.weight":
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
