"""Online requests beside batch requests in one engine, below the serving stack
(`python -m bench.batch_priority`, numbers in BENCHMARKS.md "Batch jobs").

ray_configs/local.yaml's engine and SLO policy in this process (no Ray, no HTTP): `--batch`
requests without an SLO decode throughout; rounds of 2 online requests (greedy, 32 tokens,
ttft_ms 300, tpot_ms `--tpot-ms`, priority 0) run beside them. Per phase: the online
requests' time per token between their first and last token on the engine's clock, the share
within the TPOT bound, the batch requests sitting out per step (deferral), and the batch's
tokens/s. Phases: online alone; beside the batch with deferral off; batch at priority 0
(deferral by predicted step only); batch at priority -1 (also yields when an online request
runs late by the engine's measured pace: policies/deferral.py). It tells whether what
online requests lose beside a batch is lost in the engine's steps or in the serving path
(bench/batch.py online measures the same through HTTP).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from cluster.config import load_config
from cluster.model_server import build_engine
from cluster.serve_cmd import read_yaml
from engine.engine import LLMEngine
from engine.params import SamplingParams
from policies.deferral import DeferralConfig
from policies.slo import SLO

CONFIG = Path(__file__).resolve().parent.parent / "ray_configs" / "local.yaml"


class Counting:
    """Wraps the engine's policy: deferred requests per step."""

    def __init__(self, engine: LLMEngine) -> None:
        self.policy = engine.scheduler.policy
        self.plan, self.steps, self.deferred = self.policy.plan, 0, 0
        self.policy.plan = self._plan

    def _plan(self, view: Any) -> Any:
        decision = self.plan(view)
        self.steps += 1
        self.deferred += len(decision.deferred)
        return decision


def phase(engine: LLMEngine, counter: Counting, args: argparse.Namespace, num_batch: int,
          priority: int, defer: bool = True) -> dict[str, Any]:
    counter.policy.policy.deferral.config = DeferralConfig(enabled=defer)
    counter.steps = counter.deferred = 0
    long = SamplingParams(max_tokens=1500, ignore_eos=True, temperature=0)
    batch = [engine.add_request("def f(x):\n", long, priority=priority)
             for _ in range(num_batch)]
    for _ in range(3):
        engine.step()
    start, made = time.monotonic(), sum(len(b.output_ids) for b in batch)
    paces: list[float] = []
    for _ in range(args.rounds):
        online = [engine.add_request("import os\n", SamplingParams(
            max_tokens=32, ignore_eos=True, temperature=0), priority=0,
            slo=SLO(300.0, args.tpot_ms, None)) for _ in range(2)]
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        while len(last) < len(online):
            for out in engine.step():
                if any(out.request_id == o.id for o in online):
                    now = time.monotonic()
                    first.setdefault(out.request_id, now)
                    if out.finished:
                        last[out.request_id] = now
        paces += [(last[r] - first[r]) / 31 * 1e3 for r in last]
    batch_tps = (sum(len(b.output_ids) for b in batch) - made) / (time.monotonic() - start)
    for b in batch:
        engine.abort(b.id)
    while engine.has_unfinished():
        engine.step()
    paces.sort()
    return {"online_tpot_p50_ms": round(paces[len(paces) // 2], 1),
            "online_tpot_p90_ms": round(paces[int(0.9 * len(paces))], 1),
            "within_tpot": round(sum(p <= args.tpot_ms for p in paces) / len(paces), 2),
            "batch_deferred_per_step": round(counter.deferred / max(1, counter.steps), 1),
            "batch_tokens_per_s": round(batch_tps)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.batch_priority", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="batch requests decoding")
    p.add_argument("--rounds", type=int, default=10, help="rounds of 2 online requests")
    p.add_argument("--tpot-ms", type=float, default=25.0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    engine = build_engine(load_config(read_yaml(CONFIG, None)[0]["args"]))
    counter = Counting(engine)
    args_warm = argparse.Namespace(**{**vars(args), "rounds": 1})
    phase(engine, counter, args_warm, 0, 0)
    rows = {"online alone": phase(engine, counter, args, 0, 0),
            "beside batch, deferral off": phase(engine, counter, args, args.batch, -1, False),
            "beside batch, priority 0": phase(engine, counter, args, args.batch, 0),
            "beside batch, priority -1": phase(engine, counter, args, args.batch, -1)}
    for name, row in rows.items():
        print(f"{name:<28} {json.dumps(row)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {**vars(args), "json": str(args.json)},
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
