"""Acceptance traces of the engine check's own requests, for the simulator to replay them
(bench/slo_replay.py).

The simulator's requests accept as the profile's traced prompts did (bench/calibrate.py: the
first 16 held-out prompts, 96 tokens each, from their start). The engine check's requests
(bench/slo_engine_cells.py) are 16-48-token cuts or joins of any of the 200 held-out prompts
with 16-48 output tokens, so a request's own acceptance need not be its trace's. Here each
such request runs greedily in every speculative option, as calibration traces its prompts
(its Recorder, its run loop), on the engine check's own model and executor
(bench/slo_engine.py EngineBench), and the traces are saved as a profile: the base profile's
cost points, one trace per request, and meta naming the requests (seed, id, prompt index,
prompt and output tokens) so that a replay can check it draws the same ones.

A request's prompt and lengths do not depend on the load: `generate` draws one number per
arrival gap whatever the rate, so one trace serves every load of a seed (the replay checks).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from bench.calibrate import Recorder, _run
from bench.slo_engine import EngineBench, ScaledCost
from bench.slo_engine_cells import cell_specs
from engine.policy import FirstComePolicy
from policies.option import LINEAR, QUADRATIC, TRACED, Option
from policies.policy import SLOPolicy
from policies.profile import Iteration, Profile
from policies.workloads import RequestSpec

SPECULATIVE = tuple(o for o in TRACED if o.mode in (LINEAR, QUADRATIC))
# Requests per engine run: their cache fits the engine's pool (512 blocks of 16 tokens), so
# none is preempted mid-iteration, which the Recorder would count as part of the iteration.
CHUNK = 32


def trace_requests(bench: EngineBench, specs: Sequence[RequestSpec],
                   options: Sequence[Option] = SPECULATIVE, chunk: int = CHUNK
                   ) -> dict[Option, list[list[Iteration]]]:
    """Per option, one trace per request (in the order of specs): its prompt as the engine
    check builds it, run to its own max_tokens."""
    prompts = [bench.prompt_ids(s) for s in specs]
    lengths = [s.max_tokens for s in specs]
    traces: dict[Option, list[list[Iteration]]] = {}
    for option in options:
        eng, traces[option] = bench.engine(FirstComePolicy()), []
        for lo in range(0, len(specs), chunk):
            recorder = Recorder()
            part = prompts[lo:lo + chunk]
            ids = _run(eng, recorder, part, [option] * len(part), lengths[lo:lo + chunk])
            traces[option] += [recorder.iterations[i] for i in ids]
    return traces


def request_key(seed: int, spec: RequestSpec) -> list:
    return [seed, spec.id, spec.prompt_index, spec.num_prompt, spec.max_tokens]


def trace_cells(workload: str, seeds: Sequence[int], num_requests: int, profile_path: str,
                factor: float = 1.0) -> Profile:
    """The traces of every request of the cells' seeds (any load: see the module doc)."""
    import torch

    torch.set_num_threads(1)  # as the engine check ran
    base = Profile.load(profile_path)
    bench, start = EngineBench(), time.time()
    cost = ScaledCost(SLOPolicy(base).cost, factor)
    specs: list[RequestSpec] = []
    keys: list[list] = []
    for seed in seeds:
        for spec in cell_specs(workload, "low", seed, num_requests, cost, len(bench.prompts)):
            specs.append(spec)
            keys.append(request_key(seed, spec))
    traces = trace_requests(bench, specs)
    meta = {"measured": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - start),
            "what": "acceptance of the engine check's requests (bench/replay_traces.py)",
            "base_profile": str(profile_path), "workload": workload, "seeds": list(seeds),
            "num_requests": num_requests, "num_prompts": len(bench.prompts), "slo_scale": factor,
            "requests": keys}
    return Profile(base.cost, traces, meta)


def replay_specs(traced: Profile, specs: Sequence[RequestSpec], seed: int) -> list[RequestSpec]:
    """The specs with prompt_index pointing at each request's own trace; ValueError where
    a request was not traced or its prompt or lengths differ from the traced one."""
    index = {(k[0], k[1]): i for i, k in enumerate(traced.meta["requests"])}
    out = []
    for spec in specs:
        i = index.get((seed, spec.id))
        if i is None or traced.meta["requests"][i] != request_key(seed, spec):
            raise ValueError(f"seed {seed} {spec.id}: not traced as drawn here "
                             f"({request_key(seed, spec)})")
        out.append(replace(spec, prompt_index=i))
    return out
