"""Host time per engine step with a zero-cost model: scheduling, plan building (the packed
upload of engine/step_inputs.py), result decoding and the scheduler's update, at 64 running
requests. On a GPU this is time the device waits for unless it hides behind the forward;
the target (issue 13) is under 1 ms.

The zero-cost executor runs the real executor's host code (pack_plan, one host tensor for
the upload, the result cut of engine/executor.py) and replaces only the device work: the
"sampled" token at absolute position p is a hash of (seed, p), so drafts and the verifier
agree wherever their positions do (full acceptance, as a perfect drafter would give).

    python -m bench.step_overhead [--requests 64] [--steps 200] [--policy slo]

--policy slo adds rows for requests with a loose deadline each under the SLO policy
(bench/slo_profile.json): pinned to AR (`ar slo`, the policy without the mode selector),
and `auto` with its decisions kept across steps (policies/decision_cache.py) and re-planned
in full every step (`slo_full`); `plan ms` is the policy's own CPU time per step (its one
decision, `SLOPolicy.plan`), the part of `rest` the mode choice costs. #12 asks auto's plan
time at 4-8 decoders to be close to the AR-pinned policy's: `--requests 4`, `--requests 8`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from engine.device_io import DeviceIO
from engine.engine import EngineConfig, LLMEngine
from engine.executor import Executor, cut_results
from engine.params import DecodeParams, SamplingParams
from engine.plan import StepOutput, StepPlan
from engine.policy import SchedulingPolicy, WatchedPolicy
from engine.scheduler import SchedulerConfig
from engine.step_inputs import float_bits, pack_plan
from models.checkpoint import DEFAULT_MODEL_DIR
from models.config import ModelConfig
from models.tokenizer import TextCodec
from policies.decision import BatchDecision, SchedulerView
from policies.slo import SLO


class ZeroCostExecutor(Executor):
    def __init__(self, vocab_size: int, avoid: set[int]) -> None:
        self.vocab, self.avoid = vocab_size, avoid
        self.io = DeviceIO("cpu")
        self.host_s: list[float] = []

    def _token(self, seed: int, position: int) -> int:
        tok = (seed * 1_000_003 + position * 7919) % self.vocab
        return tok + 1 if tok in self.avoid else tok

    def step(self, plan: StepPlan) -> StepOutput:
        start = time.process_time()
        values, layout = pack_plan(plan.works)
        self.io.upload(values)
        tokens, accepted, scores = [], [], []
        for w in plan.works:
            mine = [self._token(w.seed, p) for p in w.sample_positions]
            n = 0
            while n < len(w.verify_drafts) and w.verify_drafts[n] == mine[n]:
                n += 1
            tokens += mine
            accepted.append(n)
            scores += [1.0] * len(w.score_rows)
        host = tokens + float_bits([0.95] * len(tokens)) + accepted + float_bits(scores)
        out = StepOutput(cut_results(host, layout), 0.0)
        self.host_s.append(time.process_time() - start)
        return out


class TimedPolicy(WatchedPolicy):
    """A scheduling policy's plan() with its CPU time and its deferrals recorded (also the
    engine diagnosis's: bench/slo_engine_diag.py)."""

    def __init__(self, inner: SchedulingPolicy) -> None:
        super().__init__(inner)
        self.plan_s: list[float] = []
        self.num_deferred: list[int] = []  # decoders sitting the step out, per plan

    def watch(self, view: SchedulerView, decision: BatchDecision, cpu_s: float) -> None:
        self.plan_s.append(cpu_s)
        self.num_deferred.append(len(decision.deferred))


def slo_policy(kept: bool, fixed: str | None = None) -> SchedulingPolicy:
    from engine.slo_policy import SLOSchedulingPolicy
    from policies.decision_cache import CacheConfig
    from policies.option import option_of
    from policies.policy import PolicyConfig

    return TimedPolicy(SLOSchedulingPolicy.from_profile(
        str(Path(__file__).with_name("slo_profile.json")),
        PolicyConfig(fixed=option_of(fixed) if fixed else None,
                     cache=CacheConfig(enabled=kept))))


def run(config: ModelConfig, codec: TextCodec, mode: str, block: int, requests: int,
        steps: int, policy: SchedulingPolicy | None = None) -> dict[str, float]:
    avoid = {config.mask_token_id, config.eos_token_id}
    executor = ZeroCostExecutor(config.vocab_size, avoid)
    engine = LLMEngine(executor, config, codec, EngineConfig(
        num_blocks=8192, scheduler=SchedulerConfig(max_num_seqs=requests,
                                                   max_batch_tokens=16384)), policy)
    prompt = "def fibonacci(n):\n    " * 4
    slo = SLO(deadline_ms=600_000.0) if policy is not None else None
    for i in range(requests):
        engine.add_request(prompt, SamplingParams(max_tokens=1900, seed=i, ignore_eos=True),
                           DecodeParams(mode=mode, block_length=block if block else None),
                           slo=slo)
    while engine.scheduler.waiting or any(r.cache.num_cached == 0
                                          for r in engine.scheduler.running):
        engine.step()  # prefill everyone first
    executor.host_s.clear()
    plan_s = getattr(policy, "plan_s", None)
    if plan_s is not None:
        plan_s.clear()
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        engine.step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if len(engine.scheduler.running) != requests:
        raise RuntimeError(f"{len(engine.scheduler.running)} running, wanted {requests}")
    return {"wall_ms": 1e3 * statistics.median(times), "step_ms": 1e3 * statistics.mean(cpu),
            "executor_host_ms": 1e3 * statistics.mean(executor.host_s),
            "plan_ms": 1e3 * statistics.mean(plan_s) if plan_s else float("nan")}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--policy", choices=("first_come", "slo"), default="first_come")
    args = p.parse_args(argv)
    config = ModelConfig.from_json(DEFAULT_MODEL_DIR / "config.json")
    codec = TextCodec.load(DEFAULT_MODEL_DIR)
    print(f"host time per step, zero-cost model, {args.requests} running requests: CPU time "
          f"of this process (mean of {args.steps} steps; robust to a shared machine) and "
          f"wall time (median)")
    print(f"{'mode':<16}{'block':>6}{'cpu ms':>9}{'executor':>10}{'rest':>8}{'wall ms':>9}"
          f"{'plan ms':>9}")
    rows: list[tuple[str, str, int, SchedulingPolicy | None]] = [
        (mode, mode, block, None) for mode, block in (
            ("ar", 0), ("spec_linear", 4), ("spec_quadratic", 4), ("diffusion", 8))]
    if args.policy == "slo":
        rows += [("ar slo", "auto", 0, slo_policy(True, "ar")),
                 ("auto slo", "auto", 0, slo_policy(True)),
                 ("auto slo_full", "auto", 0, slo_policy(False))]
    for name, mode, block, policy in rows:
        r = run(config, codec, mode, block, args.requests, args.steps, policy)
        rest = r["step_ms"] - r["executor_host_ms"]
        print(f"{name:<16}{block:>6}{r['step_ms']:>9.3f}{r['executor_host_ms']:>10.3f}"
              f"{rest:>8.3f}{r['wall_ms']:>9.3f}{r['plan_ms']:>9.3f}")
    print("executor = plan packing + upload tensor + result cut; rest = schedule, update, "
          "outputs (detokenization); target: cpu ms < 1 (issue 13)")


if __name__ == "__main__":
    main()
