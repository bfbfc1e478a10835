"""Modelled (not measured) cost profiles: an 8B Llama-3-shaped model on one H100/H200, from
spec-sheet bandwidth and FLOP/s and the model's bytes and FLOPs, in the form of
bench/slo_profile.json (`cost` points + `traces`), so `tandem bench slo --profile` can answer
"what does auto buy on a GPU" before a device has measured one (bench/gpu.py writes the
measured kind).

  step_s(tokens T, requests R) = host_s + R * per_request_host_s
                                 + max(bytes(T, R) / bandwidth, flops(T, R) / flop_rate)
  bytes = weights + R * context * kv_bytes_per_token + T * kv_bytes_per_token (KV written)
  flops = 2 * params * T + 4 * layers * hidden * T * context  (QK^T and PV over the cache)

Every constant and where it comes from is written into the profile's `model` field. The
simulator fits the policy's straight line (policies/cost_model.py) through these points,
which charges a short multi-token chunk somewhat more than the max() does: a conservative
reading for speculation. Acceptance `traces` are copied from a measured profile (the shipped
tandem-tiny's, bench/slo_profile.json); `tandem bench slo --acceptance nld8b` swaps in the
synthetic Nemotron-Labs-Diffusion-8B source (bench/synthetic_acceptance.py).

  python -m bench.roofline            # rewrites bench/profiles/roofline-{h200,h100}-llama8b.json
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).parent
PROFILES = HERE / "profiles"


@dataclass(frozen=True)
class Llama8B:
    """Llama-3-8B (config.json of meta-llama/Meta-Llama-3-8B) in bf16."""
    params: float = 8.03e9  # parameters (embedding and LM head included)
    layers: int = 32
    hidden: int = 4096
    kv_heads: int = 8
    head_dim: int = 128
    bytes_per_value: int = 2  # bf16

    @property
    def weight_bytes(self) -> float:  # 16.06 GB
        return self.params * self.bytes_per_value

    @property
    def kv_bytes_per_token(self) -> float:  # K and V, every layer: 131072 B = 128 KiB
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_value


@dataclass(frozen=True)
class Gpu:
    name: str
    hbm_bytes_per_s: float  # spec sheet
    bf16_flops: float  # spec sheet, dense (no sparsity)
    bandwidth_efficiency: float = 0.9  # share of the spec bandwidth a weight stream reaches
    flop_efficiency: float = 0.8  # share of peak a large bf16 GEMM reaches
    host_s: float = 150e-6  # launch + sampling + plan per step (CUDA graphs, sync-free step)
    per_request_host_s: float = 5e-6  # per request: its plan row, its sampled ids


H200 = Gpu("h200", 4.8e12, 989e12)  # H200 SXM: 4.8 TB/s HBM3e, 989 TFLOP/s dense bf16
H100 = Gpu("h100", 3.35e12, 989e12)  # H100 SXM: 3.35 TB/s HBM3, 989 TFLOP/s dense bf16
CONTEXT = 256  # mean tokens in a request's cache (the SLO workloads: prompt <= 48, output <= 96)

# (batch tokens, batch requests): decode batches, speculative chunks (linear B, quadratic
# B(B+1)) alone and batched, and prefill-sized batches up to the engine's token budget.
GRID = [(1, 1), (2, 1), (4, 1), (6, 1), (8, 1), (12, 1), (16, 1), (20, 1), (30, 1), (42, 1),
        (56, 1), (72, 1), (2, 2), (4, 4), (8, 8), (16, 16), (32, 32), (64, 64), (8, 2),
        (16, 4), (32, 8), (48, 16), (64, 16), (80, 4), (96, 8), (128, 8), (160, 32),
        (192, 16), (256, 16), (320, 20), (512, 32), (640, 64), (1024, 64), (2048, 64)]


def step_s(gpu: Gpu, model: Llama8B, tokens: int, requests: int,
           context: int = CONTEXT) -> float:
    kv = model.kv_bytes_per_token
    num_bytes = model.weight_bytes + requests * context * kv + tokens * kv
    flops = 2 * model.params * tokens + 4 * model.layers * model.hidden * tokens * context
    memory = num_bytes / (gpu.hbm_bytes_per_s * gpu.bandwidth_efficiency)
    compute = flops / (gpu.bf16_flops * gpu.flop_efficiency)
    return gpu.host_s + requests * gpu.per_request_host_s + max(memory, compute)


def profile(gpu: Gpu, model: Llama8B, traces: dict) -> dict:
    eff_bw = gpu.hbm_bytes_per_s * gpu.bandwidth_efficiency
    eff_flops = gpu.bf16_flops * gpu.flop_efficiency
    ridge = model.weight_bytes / eff_bw / (2 * model.params / eff_flops)
    return {
        "meta": {"modelled": True, "source": "roofline (bench/roofline.py), not measured",
                 "device": gpu.name, "model": "Llama-3-8B-shaped, bf16",
                 "acceptance": "tandem-tiny's measured traces (bench/slo_profile.json)"},
        "model": {
            "gpu": asdict(gpu), "llama": asdict(model), "context_tokens": CONTEXT,
            "weight_bytes": model.weight_bytes,
            "kv_bytes_per_token": model.kv_bytes_per_token,
            "derivation": [
                f"weights {model.params:.3g} params x 2 B = {model.weight_bytes / 1e9:.2f} GB",
                f"KV per token 2 x {model.layers} layers x {model.kv_heads} heads x "
                f"{model.head_dim} x 2 B = {model.kv_bytes_per_token:.0f} B",
                f"bandwidth {gpu.hbm_bytes_per_s / 1e12:.2f} TB/s x "
                f"{gpu.bandwidth_efficiency} = {eff_bw / 1e12:.2f} TB/s: one weight pass "
                f"{model.weight_bytes / eff_bw * 1e3:.2f} ms",
                f"compute {gpu.bf16_flops / 1e12:.0f} TFLOP/s x {gpu.flop_efficiency} = "
                f"{eff_flops / 1e12:.0f} TFLOP/s: 2 x params = "
                f"{2 * model.params / eff_flops * 1e6:.1f} us per token",
                f"ridge: compute-bound above ~{ridge:.0f} tokens per step",
                f"host {gpu.host_s * 1e6:.0f} us per step + "
                f"{gpu.per_request_host_s * 1e6:.0f} us per request (assumed)",
            ],
            "formula": "host_s + R*per_request_host_s + max(bytes/bandwidth, flops/flop_rate)",
        },
        "cost": [[t, r, round(step_s(gpu, model, t, r), 7)] for t, r in GRID],
        "traces": traces,
    }


def main() -> None:
    traces = json.loads((HERE / "slo_profile.json").read_text())["traces"]
    PROFILES.mkdir(exist_ok=True)
    for gpu in (H200, H100):
        path = PROFILES / f"roofline-{gpu.name}-llama8b.json"
        path.write_text(json.dumps(profile(gpu, Llama8B(), traces), indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
