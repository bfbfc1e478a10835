"""The shard-worker path without Ray: tp processes (torch.multiprocessing), one ShardWorker
each, NCCL on CUDA or gloo on CPU, compared with one unsharded process.

The GPU machine has no Ray, so this is how scripts/gpu_check.sh exercises the actor code
(ShardWorker.setup: process group, shard loading, KV slice; ModelExecutor.step on the
shard) on NCCL:

    python -m actors.gpu_smoke --tp 1 --device cuda

Each rank also drives its own LLMEngine over its shard's executor: the engines schedule
identically, so their collectives line up and rank 0's tokens are the group's tokens.
Prints one table row per check and exits 1 on a mismatch. On CPU it checks any tp with gloo
(the tests use it for tp=4 with replicated kv heads).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from actors.free_port import free_port
from actors.shard_worker import ShardWorker
from engine.engine import EngineConfig, LLMEngine
from engine.executor import ModelExecutor
from engine.params import DecodeParams, Mode, SamplingParams
from models.batch import Chunk, ChunkBatch
from models.checkpoint import DEFAULT_MODEL_DIR, load_checkpoint
from models.config import ModelConfig

MODES = (Mode.AR, Mode.DIFFUSION, Mode.SPEC_LINEAR, Mode.SPEC_QUADRATIC)
NUM_BLOCKS = 64


@dataclass(frozen=True)
class SmokeSpec:
    model_dir: str
    tp: int
    device: str = "cuda"
    dtype: str = "float32"
    max_tokens: int = 24
    modes: tuple[str, ...] = tuple(m.value for m in MODES)
    temperature: float = 0.8
    seed: int = 7


@dataclass(frozen=True)
class SmokeResult:
    tp: int
    backend: str
    max_abs_logit_diff: float
    tokens_equal: dict[str, bool]  # per mode: sharded tokens == unsharded tokens
    seconds: float

    @property
    def ok(self) -> bool:
        return all(self.tokens_equal.values())


def check_chunks(vocab_size: int, mask_id: int) -> list[Chunk]:
    """A causal chunk and a bidirectional [seed, MASK x 7] chunk, fixed token ids."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab_size, (21,), generator=gen).tolist()
    block = [ids[-1]] + [mask_id] * 7
    return [Chunk.causal(ids[:13]), Chunk.bidirectional(block, start=13)]


def _prompts(vocab_size: int) -> list[int]:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(4, vocab_size, (11,), generator=gen).tolist()


def _run(executor: ModelExecutor, config: ModelConfig, spec: SmokeSpec
         ) -> tuple[torch.Tensor, dict[str, list[int]]]:
    """Logits of the check chunks and, per mode, the generated token ids."""
    chunks = check_chunks(config.vocab_size, config.mask_token_id)
    with torch.inference_mode():
        batch = ChunkBatch.from_chunks(chunks, executor.device)
        logits = executor.model(batch).logits.float().cpu()  # [T, V]
    engine = LLMEngine(executor, config, None, EngineConfig(num_blocks=NUM_BLOCKS))
    tokens = {}
    for mode in spec.modes:
        sampling = SamplingParams(max_tokens=spec.max_tokens, temperature=spec.temperature,
                                  seed=spec.seed, ignore_eos=True)
        out = engine.generate([_prompts(config.vocab_size)], sampling,
                              DecodeParams(mode=Mode(mode)))[0]
        tokens[mode] = out.token_ids
    return logits, tokens


def _rank_main(rank: int, spec: SmokeSpec, port: int, out_dir: str) -> None:
    device = f"cuda:{rank}" if spec.device == "cuda" else "cpu"
    worker = ShardWorker(spec.model_dir, rank, spec.tp, NUM_BLOCKS, 16, device, spec.dtype,
                         num_threads=1 if spec.device == "cpu" else 0)
    worker.setup("127.0.0.1", port, timeout_s=120)
    assert worker.executor is not None
    config = worker.executor.model.config
    logits, tokens = _run(worker.executor, config, spec)
    if rank == 0:  # files, not a pipe: a pipe would block this rank until the parent reads
        save_file({"logits": logits.contiguous()}, f"{out_dir}/logits.safetensors")
        Path(out_dir, "tokens.json").write_text(json.dumps(tokens))
    worker.shutdown()


def check_sharded(spec: SmokeSpec) -> SmokeResult:
    """Run spec.tp ranks in processes and one unsharded model here; compare."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tandem-smoke-") as out_dir:
        mp.start_processes(_rank_main, args=(spec, free_port(), out_dir), nprocs=spec.tp,
                           join=True, start_method="spawn")
        sharded_logits = load_file(f"{out_dir}/logits.safetensors")["logits"]
        sharded_tokens = json.loads(Path(out_dir, "tokens.json").read_text())
    device = "cuda:0" if spec.device == "cuda" else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec.dtype]
    model = load_checkpoint(spec.model_dir, dtype=dtype, device=device)
    logits, tokens = _run(ModelExecutor(model, NUM_BLOCKS), model.config, spec)
    diff = (sharded_logits - logits).abs().max().item()
    equal = {m: sharded_tokens[m] == tokens[m] for m in spec.modes}
    backend = "nccl" if spec.device == "cuda" else "gloo"
    return SmokeResult(spec.tp, backend, diff, equal, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m actors.gpu_smoke", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--tol", type=float, default=None,
                   help="max |logit diff| (default: 1e-5 float32, 5e-2 bfloat16)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = p.parse_args(argv)
    if args.device == "cuda" and torch.cuda.device_count() < args.tp:
        print(f"gpu_smoke: tp={args.tp} needs {args.tp} GPUs, found "
              f"{torch.cuda.device_count()}", file=sys.stderr)
        sys.exit(2)
    spec = SmokeSpec(str(args.model), args.tp, args.device, args.dtype, args.max_tokens)
    result = check_sharded(spec)
    tol = args.tol if args.tol is not None else (1e-5 if args.dtype == "float32" else 5e-2)
    ok = result.ok and result.max_abs_logit_diff <= tol
    if args.json:
        print(json.dumps({**asdict(result), "tol": tol, "ok": ok}))
    else:
        modes = " ".join(f"{m}={'same' if e else 'DIFF'}" for m, e in
                         result.tokens_equal.items())
        print(f"shard path  tp={result.tp} {result.backend:<5} max|dlogit|="
              f"{result.max_abs_logit_diff:.2e} (tol {tol:.0e})  tokens: {modes}  "
              f"{'PASS' if ok else 'FAIL'}  {result.seconds:.1f}s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
