"""The model shapes bench/gpu.py runs, and what reading a step's bytes costs at a measured
bandwidth (the HBM bound). The step plans themselves: engine/synthetic.py."""

from __future__ import annotations

import statistics
import time

import torch

from engine.synthetic import Shape
from models.config import ModelConfig
from models.transformer import TriModeLM

# Llama-3-8B (meta-llama/Meta-Llama-3-8B config.json), with a mask id inside the vocabulary
# (the reserved special tokens start at 128002).
LLAMA3_8B = ModelConfig(vocab_size=128256, hidden_size=4096, num_layers=32, num_heads=32,
                        num_kv_heads=8, head_dim=128, intermediate_size=14336,
                        rope_theta=500000.0, max_position_embeddings=8192,
                        mask_token_id=128002, bos_token_id=128000, eos_token_id=128001,
                        pad_token_id=128003)
# The --cpu dry run: same code, shapes the Triton interpreter runs in seconds.
TINY = ModelConfig(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=16, intermediate_size=128, mask_token_id=4)


def weight_bytes_read(model: TriModeLM, num_tokens: int) -> int:
    """Bytes of weights one forward reads: every matrix once, but only the embedding rows of
    the batch's tokens."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb = model.model.embed_tokens.weight
    return total - emb.numel() * emb.element_size() + num_tokens * emb.shape[1] * emb.element_size()


def kv_bytes_read(config: ModelConfig, shape: Shape, context: int, elem: int) -> int:
    """Cached K and V every request's chunk reads, over all layers."""
    per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * elem
    return shape.batch * context * per_token


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting the read and the write."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = time_it(lambda: dst.copy_(src), device, repeats, warmup=2)
    return 2 * nbytes / seconds


def time_it(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:  # noqa: ANN001
    """Median seconds of fn() (CUDA events on a GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
