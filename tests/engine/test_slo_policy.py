"""The SLO policy on the real engine: a burst of 64 auto requests with mixed SLOs and a KV
pool too small for all of them at once. Nobody starves: every request finishes, or was
refused at admission with a reason and a status."""

from __future__ import annotations

import time
from pathlib import Path

from engine.engine import EngineConfig, LLMEngine
from engine.executor import ModelExecutor
from engine.params import DecodeParams, Mode, SamplingParams
from engine.policy import AdmissionError
from engine.scheduler import SchedulerConfig
from engine.slo_policy import SLOSchedulingPolicy
from models.heldout import load_prompts
from policies.slo import SLO

PROFILE = Path(__file__).parents[2] / "bench" / "slo_profile.json"


def slo_for(i: int) -> SLO:
    kinds = [SLO(ttft_ms=2000.0, tpot_ms=200.0),  # interactive
             SLO(deadline_ms=30_000.0),  # batch
             SLO(),  # no bounds: best effort by nature
             SLO(tpot_ms=0.5),  # no mode decodes at 0.5 ms per token: refused (503)
             SLO(tpot_ms=0.5, best_effort=True)]  # the same, but best effort: admitted
    return kinds[i % len(kinds)]


def test_burst_of_64_auto_requests_nobody_starves(tiny_model, codec):
    policy = SLOSchedulingPolicy.from_profile(PROFILE)
    # 40 blocks of 16 tokens: ~13 requests' worth of cache, so the burst preempts.
    config = EngineConfig(num_blocks=40, scheduler=SchedulerConfig(max_num_seqs=64))
    engine = LLMEngine(ModelExecutor(tiny_model, 40), tiny_model.config, codec, config, policy)
    prompts = load_prompts(num=64)
    live, refused = {}, {}
    for i, text in enumerate(prompts):
        ids = codec.encode(text)[:24]
        try:
            req = engine.add_request(ids, SamplingParams(max_tokens=10, ignore_eos=True, seed=i),
                                     DecodeParams(mode=Mode.AUTO), slo=slo_for(i))
            live[req.id] = req
        except AdmissionError as err:
            refused[i] = err
    finished, start = {}, time.monotonic()
    while engine.has_unfinished():
        assert time.monotonic() - start < 120, "the burst did not drain"
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out
    assert set(finished) == set(live)
    assert all(len(out.token_ids) == 10 for out in finished.values())
    assert sorted(refused) == [i for i in range(64) if i % 5 == 3]
    assert all(e.status == 503 and "tpot_ms=0.5" in e.reason for e in refused.values())
    assert sum(r.stats.num_preemptions for r in live.values()) > 0


def test_idle_engine_speculates_for_a_lone_request_and_stays_lossless(tiny_model, codec):
    policy = SLOSchedulingPolicy.from_profile(PROFILE)
    engine = LLMEngine(ModelExecutor(tiny_model, 64), tiny_model.config, codec,
                       EngineConfig(num_blocks=64), policy)
    prompt = load_prompts(num=6)[5]  # one that accepts drafts well (bench/slo_profile.json)
    sampling = SamplingParams(max_tokens=24, ignore_eos=True, seed=7)
    auto = engine.generate([prompt], sampling, DecodeParams(mode=Mode.AUTO))[0]
    ar = engine.generate([prompt], sampling, DecodeParams(mode=Mode.AR))[0]
    assert set(auto.modes) - {"prefill", "ar"}, f"auto did not speculate: {auto.modes}"
    assert auto.token_ids == ar.token_ids
    assert auto.num_forwards < ar.num_forwards
    # the blocks the policy chose for it, reported per request (the response's `tandem`)
    spec = {k: n for k, n in auto.forwards_by_block.items() if not k.startswith("ar/")}
    assert spec and all(int(k.split("/")[1]) >= 2 for k in spec)
    assert sum(auto.forwards_by_block.values()) == auto.num_forwards - auto.modes["prefill"]
