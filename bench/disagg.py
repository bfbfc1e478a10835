"""`tandem bench disagg`: fused self-speculation (linear, quadratic; one shard group) against
disaggregated pipelined speculation (a draft pool and a verify pool, one shard group each)
at batch 1, 4 and 16, in one run, greedy, on held-out prompts of the shipped model.

Per cell: tokens/s and its ratio to fused AR and to the best fused speculation, each pool's
idle fraction (1 - its own forward time / the run's wall time), tokens/s per CPU core the
pools hold (fused: 1 rank, disaggregated: 2), and the same step sequence replayed through
the roofline model of an 8B model on H200s (bench/roofline.py; MODELLED, not measured):
each fused step costs step_s(tokens, requests), each disaggregated step the max of its two
pools' (one GPU each), so the modelled ratio is per GPU as well. Also: recomputing the
accepted tokens' KV on the draft pool against shipping it from the verify pool.

    flock /tmp/tandem-bench.lock python -m bench.disagg --json bench/disagg_results.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import ray

from actors.engine_factory import sharded_engine
from actors.pipelined_engine import PipelinedEngine, PoolShape, disaggregated_engine
from bench.roofline import H200, Llama8B, step_s
from bench.synthetic_acceptance import expected_tokens
from cluster import cpu_placement
from engine.engine import EngineConfig, LLMEngine
from engine.executor import Executor
from engine.modes.spec_pipelined import draft_chunk
from engine.params import DecodeParams, Mode, SamplingParams
from engine.plan import ChunkWork, StepOutput, StepPlan
from models.batch import Chunk
from models.checkpoint import DEFAULT_MODEL_DIR
from models.heldout import load_prompts

CONFIGS = [("fused", Mode.AR, False), ("fused", Mode.SPEC_LINEAR, False),
           ("fused", Mode.SPEC_QUADRATIC, False), ("disagg", Mode.SPEC_PIPELINED, False),
           ("disagg", Mode.SPEC_PIPELINED, True)]


class TracingExecutor(Executor):
    """The fused group, recording (tokens, works, rank 0's forward seconds) per step."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.log = inner, []

    def step(self, plan: StepPlan) -> StepOutput:
        out = self.inner.step(plan)
        self.log.append((plan.num_tokens, len(plan.works), out.elapsed_s))
        return out

    def shutdown(self) -> None:
        self.inner.shutdown()


@dataclass
class Cell:
    placement: str
    mode: str
    hedge: bool
    block: int
    batch: int
    tokens: int
    seconds: float
    tokens_per_s: float
    cores: int
    tokens_per_s_per_core: float
    idle: dict[str, float]  # per pool
    forwards: dict[str, int]  # per pool
    same_as_ar: bool
    cpu_s: dict[str, float]  # per pool: thread CPU seconds of its forwards (rank 0)
    cpu_tokens_per_s: float  # tokens / sum over steps of the longest pool's CPU time
    tokens_per_cpu_s: float  # tokens / CPU seconds of every pool
    cpu_idle: dict[str, float]  # per pool, on the CPU-time clock
    gpu_tokens_per_s: float  # MODELLED (roofline, 8B on H200), per GPU below
    gpu_tokens_per_s_per_gpu: float
    vs_ar: float = 0.0
    vs_best_fused_spec: float = 0.0
    cpu_vs_ar: float = 0.0
    cpu_vs_best_fused_spec: float = 0.0
    gpu_vs_best_fused_spec: float = 0.0


def _gpu_seconds(steps: list[tuple[int, int, int, int]]) -> float:
    """MODELLED: each step is the slower of its two pools, on a GPU each."""
    model = Llama8B()
    return sum(max(step_s(H200, model, vt, vr) if vr else 0.0,
                   step_s(H200, model, dt, dr) if dr else 0.0) for vt, vr, dt, dr in steps)


def run_cell(engine: LLMEngine, placement: str, mode: Mode, hedge: bool, block: int,
             prompts: list[str], max_tokens: int, ar: list[list[int]] | None) -> Cell:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0, ignore_eos=True)
    decode = DecodeParams(mode=mode, block_length=None if mode is Mode.AR else block)
    ranks = _rank0s(engine)
    ray.get([w.take_step_cpu.remote() for w in ranks.values()])  # drop earlier steps
    if isinstance(engine, PipelinedEngine):
        engine.pipelined.hedge = hedge
        pools = engine.pools
        pools.step_log = []
        before = {k: (s.num_forwards, s.busy_s) for k, s in engine.pool_stats().items()}
    else:
        engine.executor.log = []
    start = time.perf_counter()
    outs = engine.generate(prompts, sampling, decode)
    wall = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for o in outs)
    cpu = dict(zip(ranks, ray.get([w.take_step_cpu.remote() for w in ranks.values()]),
                   strict=True))
    if isinstance(engine, PipelinedEngine):
        after = engine.pool_stats()
        forwards = {k: after[k].num_forwards - before[k][0] for k in after}
        idle = {k: 1 - (after[k].busy_s - before[k][1]) / wall for k in after}
        steps, cores = pools.step_log, 2
        vi, di = iter(cpu["verify"]), iter(cpu["draft"])
        per_step = [(next(vi) if vr else 0.0, next(di) if dr else 0.0)
                    for _, vr, _, dr in steps]
    else:
        log = engine.executor.log
        forwards = {"fused": len(log)}
        idle = {"fused": 1 - sum(s for _, _, s in log) / wall}
        steps, cores = [(t, r, 0, 0) for t, r, _ in log], 1
        per_step = [(c, 0.0) for c in cpu["fused"]]
    clock = sum(max(v, d) for v, d in per_step)  # each step: the longer pool's CPU time
    cpu_s = {k: sum(v) for k, v in cpu.items()}
    cpu_idle = {k: 1 - v / clock for k, v in cpu_s.items()}
    gpu_s = _gpu_seconds(steps)
    same = ar is None or [o.token_ids for o in outs] == ar
    return Cell(placement, mode.value, hedge, block, len(prompts), tokens, wall, tokens / wall,
                cores, tokens / wall / cores, idle, forwards, same, cpu_s, tokens / clock,
                tokens / sum(cpu_s.values()), cpu_idle, tokens / gpu_s, tokens / gpu_s / cores)


def _rank0s(engine: LLMEngine) -> dict[str, object]:
    if isinstance(engine, PipelinedEngine):
        return {"verify": engine.pools.verify.workers[0],
                "draft": engine.pools.replicas[0].executor.workers[0]}
    return {"fused": engine.executor.inner.workers[0]}


def sync_costs(engine: PipelinedEngine, block: int, reps: int) -> dict[str, dict[int, float]]:
    """Best-case ms to bring n accepted tokens into the draft pool's cache: recomputed inside
    a draft chunk (its forward's CPU time minus the same draft's without them) or shipped
    as KV (wall time: verify rank 0 -> driver -> draft rank 0, tp 1 both)."""
    verify, draft = engine.pools.verify, engine.pools.replicas[0].executor
    mask, out = engine.model_config.mask_token_id, {"recompute_ms": {}, "transfer_ms": {}}
    for n in (block, 48):
        slots = list(range(n))
        with_given = draft_chunk(list(range(10, 10 + n)), [mask] * block, 0, [n - 1], [0, 1, 2])
        alone = Chunk.bidirectional([mask] * block, n, n, [0, 1, 2])
        plans = [StepPlan([ChunkWork("r", "draft", "x", c, slots if c is with_given else [],
                                     [1], [n + 1])]) for c in (with_given, alone)]
        moved = []
        ray.get(draft.workers[0].take_step_cpu.remote())
        for _ in range(reps):
            for plan in plans:
                draft.step(plan)
            t = time.perf_counter()
            kv = ray.get(verify.workers[0].read_kv.remote(slots))
            ray.get(draft.workers[0].write_kv.remote(slots, kv))
            moved.append(time.perf_counter() - t)
        cpu = ray.get(draft.workers[0].take_step_cpu.remote())
        # Best case of each (least disturbed by other work on the machine).
        out["recompute_ms"][n] = 1e3 * (min(cpu[0::2]) - min(cpu[1::2]))
        out["transfer_ms"][n] = 1e3 * min(moved)
    return out


def gpu_model(alpha: float, block: int, batch: int) -> dict[str, tuple[float, int]]:
    """MODELLED tokens/s and GPUs of each way to decode `batch` requests that accept each
    draft token with probability alpha (geometric runs, bench/synthetic_acceptance.py), an
    8B model on H200s (bench/roofline.py), one GPU per pool. Steady state:
    linear: 2 steps per iteration of B tokens each; quadratic: 1 step of B(B+1);
    pipelined: a full acceptance (alpha^(B-1)) saves the next draft step, so 2 - a^(B-1)
    steps per iteration, a step the longer of the verify pool's (the requests verifying,
    B tokens each) and the draft pool's (every request, <= 2B tokens each); hedged: 1 step,
    the draft pool drafting B(B+1) tokens a request."""
    model, r, b = Llama8B(), batch, block

    def step(tokens: float, requests: float) -> float:
        return step_s(H200, model, round(tokens), max(1, round(requests)))

    e = expected_tokens(alpha, b)  # tokens per iteration
    steps = 2 - alpha ** (b - 1)
    verifying = r / steps
    return {
        "ar": (r / step(r, r), 1),
        "fused linear": (r * e / (2 * step(r * b, r)), 1),
        "fused quadratic": (r * e / step(r * b * (b + 1), r), 1),
        "pipelined": (r * e / steps / max(step(verifying * b, verifying),
                                          step(r * 2 * b, r)), 2),
        "pipelined hedged": (r * e / max(step(r * b, r), step(r * b * (b + 1), r)), 2),
    }


def gpu_table(alphas: tuple[float, ...] = (0.55, 0.8, 0.95), blocks: tuple[int, ...] = (4, 8),
              batches: tuple[int, ...] = (1, 4, 16, 64)) -> str:
    lines = ["MODELLED (not measured): 8B bf16 on H200 (bench/roofline.py), geometric "
             "acceptance alpha per draft token; tokens/s per GPU (pipelined: total / 2)",
             f"{'alpha':>5} {'B':>2} {'batch':>5} " + " ".join(
                 f"{k:>16}" for k in gpu_model(0.5, 4, 1)) + "   pipelined total"]
    for alpha in alphas:
        for b in blocks:
            for r in batches:
                row = gpu_model(alpha, b, r)
                lines.append(f"{alpha:>5.2f} {b:>2} {r:>5} " + " ".join(
                    f"{v / g:>16.0f}" for v, g in row.values())
                    + f"   {row['pipelined'][0]:>15.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="tandem bench disagg", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,4,16")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--block", type=int, default=4)
    p.add_argument("--reps", type=int, default=2, help="runs per cell; the fastest is kept")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--gpu-model", action="store_true", help="print only the modelled GPU "
                   "table (no Ray, no CPU run)")
    args = p.parse_args(argv)
    if args.gpu_model:
        print(gpu_table())
        return
    # A Ray of our own (address="local"): another job's cluster on the machine must not
    # share these CPUs or be joined by accident.
    cpu_placement.ray_start_env(auth_off=True)
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    config = EngineConfig(num_blocks=512)
    fused = sharded_engine(DEFAULT_MODEL_DIR, 1, config)
    fused.executor = TracingExecutor(fused.executor)
    disagg = disaggregated_engine(DEFAULT_MODEL_DIR, PoolShape(tp=1), PoolShape(tp=1), config)
    try:
        warm = load_prompts(num=2)
        for eng, mode in ((fused, Mode.SPEC_QUADRATIC), (disagg, Mode.SPEC_PIPELINED)):
            eng.generate(warm, SamplingParams(max_tokens=8, seed=0), DecodeParams(mode=mode))
        cells = []
        for batch in (int(b) for b in args.batches.split(",")):
            prompts, ar = load_prompts(num=batch), None
            for placement, mode, hedge in CONFIGS:
                eng = fused if placement == "fused" else disagg
                runs = [run_cell(eng, placement, mode, hedge, args.block, prompts,
                                 args.max_tokens, ar) for _ in range(args.reps)]
                best = max(runs, key=lambda c: c.tokens_per_s)
                best.same_as_ar = all(c.same_as_ar for c in runs)
                if mode is Mode.AR:
                    ar = [o.token_ids for o in fused.generate(
                        prompts, SamplingParams(max_tokens=args.max_tokens, temperature=0.0,
                                                seed=0, ignore_eos=True))]
                cells.append(best)
            _ratios(cells[-len(CONFIGS):])
        sync = sync_costs(disagg, args.block, reps=20)
    finally:
        disagg.executor.shutdown()
        fused.executor.shutdown()
    print(table(cells, sync))
    print(gpu_table())
    if args.json:
        args.json.write_text(json.dumps({"cells": [asdict(c) for c in cells], "sync": sync,
                                         "args": vars(args) | {"json": str(args.json)}},
                                        indent=1) + "\n")


def _ratios(cells: list[Cell]) -> None:
    ar = next(c for c in cells if c.mode == Mode.AR.value)
    fused_spec = [c for c in cells if c.placement == "fused" and c.mode != Mode.AR.value]
    best, best_gpu = (max(c.tokens_per_s for c in fused_spec),
                      max(c.gpu_tokens_per_s for c in fused_spec))
    best_cpu = max(c.cpu_tokens_per_s for c in fused_spec)
    for c in cells:
        c.vs_ar = c.tokens_per_s / ar.tokens_per_s
        c.vs_best_fused_spec = c.tokens_per_s / best
        c.cpu_vs_ar = c.cpu_tokens_per_s / ar.cpu_tokens_per_s
        c.cpu_vs_best_fused_spec = c.cpu_tokens_per_s / best_cpu
        c.gpu_vs_best_fused_spec = c.gpu_tokens_per_s_per_gpu / best_gpu


def table(cells: list[Cell], sync: dict[str, dict[int, float]]) -> str:
    head = (f"{'placement':<8} {'mode':<15} {'hedge':<5} {'batch':>5} | {'wall tok/s':>10} "
            f"{'xAR':>5} {'xbest':>5} | {'CPU tok/s':>9} {'xAR':>5} {'xbest':>5} "
            f"{'tok/CPU-s':>9} {'idle (CPU clock)':<23} | {'forwards':<19} {'same':<5} | "
            f"{'GPU* tok/s':>10} {'/GPU':>6} {'xbest/GPU':>9}")
    lines = [head]
    for c in cells:
        idle = " ".join(f"{k}={v:.2f}" for k, v in c.cpu_idle.items())
        fwd = " ".join(f"{k}={v}" for k, v in c.forwards.items())
        lines.append(
            f"{c.placement:<8} {c.mode:<15} {c.hedge!s:<5} {c.batch:>5} | "
            f"{c.tokens_per_s:>10.1f} {c.vs_ar:>5.2f} {c.vs_best_fused_spec:>5.2f} | "
            f"{c.cpu_tokens_per_s:>9.1f} {c.cpu_vs_ar:>5.2f} {c.cpu_vs_best_fused_spec:>5.2f} "
            f"{c.tokens_per_cpu_s:>9.1f} {idle:<23} | {fwd:<19} {c.same_as_ar!s:<5} | "
            f"{c.gpu_tokens_per_s:>10.0f} {c.gpu_tokens_per_s_per_gpu:>6.0f} "
            f"{c.gpu_vs_best_fused_spec:>9.2f}")
    lines.append("CPU tok/s: tokens / sum over steps of the longer pool's forward CPU time "
                 "(what the steps cost without other work on the machine; Ray round trips "
                 "excluded). GPU* = MODELLED: the same steps through bench/roofline.py (8B "
                 "bf16, H200, one GPU per pool), not measured")
    for n in sync["recompute_ms"]:
        lines.append(f"draft cache sync of {n} tokens: recompute {sync['recompute_ms'][n]:.2f}"
                     f" ms (CPU), KV transfer {sync['transfer_ms'][n]:.2f} ms (wall)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
