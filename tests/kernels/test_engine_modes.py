"""The engine's four decoding modes print the same tokens whether the kernels run in Triton
(TANDEM_KERNELS=triton; the interpreter on CPU) or as the torch references.

All four modes run as one batch (one request each), so every Triton launch also sees a
ragged batch of chunks of different layouts; one draw at T=0.8 exercises the Gumbel path.
"""

from __future__ import annotations

import pytest
import torch

from engine.engine import EngineConfig, LLMEngine
from engine.params import DecodeParams, Mode, SamplingParams

PROMPTS = ["def add(a, b):", "The quick brown fox", "import os\n", "Once upon a time"]
MODES = [Mode.AR, Mode.DIFFUSION, Mode.SPEC_LINEAR, Mode.SPEC_QUADRATIC]
TEMPERATURES = [0.0, 0.0, 0.8, 0.0]


def _tokens(backend: str, monkeypatch: pytest.MonkeyPatch, max_tokens: int,
            block: int) -> list[list[int]]:
    """One fresh engine per backend (its prefix cache must not carry the other's KV)."""
    monkeypatch.setenv("TANDEM_KERNELS", backend)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = LLMEngine.from_checkpoint(config=EngineConfig(num_blocks=64), device=device)
    sampling = [SamplingParams(max_tokens=max_tokens, temperature=t, seed=7, ignore_eos=True)
                for t in TEMPERATURES]
    decode = [DecodeParams(mode=m, block_length=block) for m in MODES]
    return [r.token_ids for r in engine.generate(PROMPTS, sampling, decode)]


@pytest.mark.slow
def test_modes_same_tokens_with_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    small = not torch.cuda.is_available()  # the interpreter costs ~1 ms per program
    max_tokens, block = (6, 3) if small else (16, 8)
    reference = _tokens("torch", monkeypatch, max_tokens, block)
    triton = _tokens("triton", monkeypatch, max_tokens, block)
    for mode, got, want in zip(MODES, triton, reference, strict=True):
        assert got == want, mode.value
        assert len(got) == max_tokens, mode.value
