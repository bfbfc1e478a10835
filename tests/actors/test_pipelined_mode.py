"""Pipelined speculation's logic with in-process pools (no Ray): every emitted token is AR's,
in every layout, alone and beside the fused modes, through preemptions, aborts and stops,
with a bfloat16 draft pool and with a draft pool that fails; no draft-cache block leaks.

The shard-group pools (other tp, Ray faults) are tested in test_disaggregated.py.
"""

from __future__ import annotations

import pytest
import torch

from actors.pipelined_engine import PipelinedEngine
from actors.speculation_pools import SpeculationPools
from engine.engine import EngineConfig, LLMEngine
from engine.executor import ExecutorFailure, ModelExecutor
from engine.params import DecodeParams, Mode, SamplingParams
from engine.plan import StepOutput, StepPlan
from engine.scheduler import SchedulerConfig
from models.heldout import load_prompts
from tests.engine.helpers import make_engine

PIPELINED = Mode.SPEC_PIPELINED
NUM_BLOCKS = 256


def pipelined(model, codec, num_blocks: int = NUM_BLOCKS, hedge: bool = False,  # noqa: ANN001
              draft_model=None, max_num_seqs: int = 64) -> PipelinedEngine:  # noqa: ANN001
    config = EngineConfig(num_blocks=num_blocks,
                          scheduler=SchedulerConfig(max_num_seqs=max_num_seqs))
    pools = SpeculationPools(ModelExecutor(model, num_blocks),
                             [ModelExecutor(draft_model or model, num_blocks)])
    return PipelinedEngine(pools, model.config, codec, config, hedge=hedge)


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return load_prompts(num=4)


@pytest.fixture(scope="module")
def fused(tiny_model, codec) -> LLMEngine:
    return make_engine(tiny_model, codec, num_blocks=NUM_BLOCKS)


def _ar(fused: LLMEngine, prompts: list[str], sampling: SamplingParams) -> list[list[int]]:
    return [o.token_ids for o in fused.generate(prompts, sampling, DecodeParams(mode=Mode.AR))]


def _assert_clean(engine: PipelinedEngine) -> None:
    assert engine.pool.num_free == engine.pool.num_blocks
    assert engine.pipelined.draft_blocks_in_use() == [0]
    assert not engine.pipelined.states


@pytest.mark.parametrize("hedge", [False, True])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_pipelined_equals_ar_on_heldout_prompts(tiny_model, codec, fused, prompts, hedge,
                                                temperature) -> None:
    engine = pipelined(tiny_model, codec, hedge=hedge)
    for block in (3, 4):
        sampling = SamplingParams(max_tokens=24, temperature=temperature, seed=11,
                                  ignore_eos=True)
        outs = engine.generate(prompts, sampling, DecodeParams(mode=PIPELINED,
                                                               block_length=block))
        assert [o.token_ids for o in outs] == _ar(fused, prompts, sampling)
        assert sum(o.accepted_by_mode.get("spec_pipelined", 0) for o in outs) > 0
    stats = engine.pool_stats()
    assert stats["draft"].num_forwards > 0 and stats["verify"].num_forwards > 0
    _assert_clean(engine)


def test_pipelined_beside_the_fused_modes_in_one_batch(tiny_model, codec, fused,
                                                       prompts) -> None:
    engine = pipelined(tiny_model, codec)
    modes = [PIPELINED, Mode.AR, Mode.SPEC_LINEAR, Mode.SPEC_QUADRATIC, PIPELINED]
    texts = prompts + prompts[:1]
    samplings = [SamplingParams(max_tokens=20, temperature=0.8, seed=i, ignore_eos=True)
                 for i in range(len(texts))]
    outs = engine.generate(texts, samplings, [DecodeParams(mode=m) for m in modes])
    for text, sampling, out in zip(texts, samplings, outs, strict=True):
        assert out.token_ids == _ar(fused, [text], sampling)[0]
    _assert_clean(engine)


def test_preemption_abort_and_stop_free_every_draft_block(tiny_model, codec, fused,
                                                          prompts) -> None:
    # 14 blocks of 16 tokens for 6 requests of ~50 + 40 tokens: the pool runs dry.
    engine = pipelined(tiny_model, codec, num_blocks=14)
    sampling = SamplingParams(max_tokens=40, temperature=0.0, seed=3, ignore_eos=True)
    texts = (prompts * 2)[:6]
    reqs = [engine.add_request(t, sampling, DecodeParams(mode=PIPELINED)) for t in texts]
    done = {}
    for _ in range(6):
        engine.step()
    assert engine.abort(reqs[5].id)
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    assert engine.scheduler.num_preemptions > 0, "the pool never ran dry: test is too easy"
    want = _ar(fused, texts[:5], sampling)
    assert [done[r.id].token_ids for r in reqs[:5]] == want
    stop_at = want[0][7]
    stopped = engine.generate(
        [texts[0]], SamplingParams(max_tokens=40, seed=3, stop_token_ids=(stop_at,)),
        DecodeParams(mode=PIPELINED))[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == want[0][:want[0].index(stop_at) + 1]
    _assert_clean(engine)


def test_bfloat16_draft_pool_keeps_ar_output(tiny_model, codec, fused, prompts) -> None:
    draft = type(tiny_model)(tiny_model.config)
    draft.load_state_dict(tiny_model.state_dict())
    draft = draft.to(torch.bfloat16).eval()
    engine = pipelined(tiny_model, codec, draft_model=draft)
    sampling = SamplingParams(max_tokens=24, temperature=0.8, seed=5, ignore_eos=True)
    outs = engine.generate(prompts[:2], sampling, DecodeParams(mode=PIPELINED))
    assert [o.token_ids for o in outs] == _ar(fused, prompts[:2], sampling)
    assert sum(o.accepted_by_mode.get("spec_pipelined", 0) for o in outs) > 0


class _FailingAfter(ModelExecutor):
    """A draft pool whose steps fail from the n-th on (an in-process stand-in for a dead
    actor; the real kill is in test_disaggregated.py)."""

    def __init__(self, model, num_blocks: int, fail_from: int) -> None:  # noqa: ANN001
        super().__init__(model, num_blocks)
        self.num_steps, self.fail_from = 0, fail_from

    def step(self, plan: StepPlan) -> StepOutput:
        self.num_steps += 1
        if self.num_steps >= self.fail_from:
            raise ExecutorFailure("draft pool lost")
        return super().step(plan)


def test_a_failing_draft_pool_degrades_to_ar_with_ar_output(tiny_model, codec, fused,
                                                            prompts) -> None:
    config = EngineConfig(num_blocks=NUM_BLOCKS)
    pools = SpeculationPools(ModelExecutor(tiny_model, NUM_BLOCKS),
                             [_FailingAfter(tiny_model, NUM_BLOCKS, fail_from=4)])
    engine = PipelinedEngine(pools, tiny_model.config, codec, config)
    sampling = SamplingParams(max_tokens=24, temperature=0.8, seed=9, ignore_eos=True)
    outs = engine.generate(prompts[:2], sampling, DecodeParams(mode=PIPELINED))
    assert [o.token_ids for o in outs] == _ar(fused, prompts[:2], sampling)
    assert all(o.modes.get("ar", 0) > 0 for o in outs)  # finished on the verify pool
    assert pools.draft_stats().num_failures == 1
    assert engine.pipelined.draft_blocks_in_use() == [0]


def test_the_fused_engine_refuses_pipelined_requests_by_name(fused) -> None:
    with pytest.raises(ValueError, match="mode: spec_pipelined needs a deployment with a "
                                         "draft pool"):
        fused.add_request("x = 1", SamplingParams(max_tokens=4),
                          DecodeParams(mode=PIPELINED))


def _acceptance(outs, mode: str) -> float:  # noqa: ANN001
    return (sum(o.accepted_by_mode.get(mode, 0) for o in outs)
            / sum(o.drafted_by_mode.get(mode, 0) for o in outs))


def test_draft_cache_stays_in_step_acceptance_matches_the_fused_drafts(tiny_model, codec,
                                                                      fused, prompts) -> None:
    """Outputs are AR's whatever the draft pool reads, so a draft cache out of step shows
    only in acceptance: the redrafts read the same context as linear speculation's drafts,
    the hedged drafts the same as quadratic's. (Syncing one token too far drops them from
    0.45 to 0.32 and from 0.19 to 0.07.)"""
    sampling = SamplingParams(max_tokens=32, temperature=0.0, seed=1, ignore_eos=True)
    for hedge, fused_mode in ((False, Mode.SPEC_LINEAR), (True, Mode.SPEC_QUADRATIC)):
        want = _acceptance(fused.generate(prompts, sampling, DecodeParams(
            mode=fused_mode, block_length=4)), fused_mode.value)
        engine = pipelined(tiny_model, codec, hedge=hedge)
        got = _acceptance(engine.generate(prompts, sampling, DecodeParams(
            mode=PIPELINED, block_length=4)), PIPELINED.value)
        assert got >= 0.85 * want, f"hedge={hedge}: acceptance {got:.2f} vs fused {want:.2f}"


def test_slo_policy_with_a_draft_pool_runs_pipelined_requests_as_ar(tiny_model, codec, fused,
                                                                    prompts) -> None:
    """The SLO-aware scheduler on a disaggregated engine (the pipelined option in its pool,
    cluster/speculation.py): auto and pinned pipelined requests finish with AR's tokens."""
    from cluster.config import TandemConfig
    from cluster.speculation import slo_policy_config
    from engine.slo_policy import SLOSchedulingPolicy
    from policies.slo import SLO

    config = TandemConfig.model_validate({"speculation": {"placement": "disaggregated"}})
    policy = SLOSchedulingPolicy.from_profile("bench/slo_profile.json",
                                              slo_policy_config(config))
    assert any(o.mode == "spec_pipelined" for o in policy.policy.selector.config.pool)
    pools = SpeculationPools(ModelExecutor(tiny_model, NUM_BLOCKS),
                             [ModelExecutor(tiny_model, NUM_BLOCKS)])
    engine = PipelinedEngine(pools, tiny_model.config, codec, EngineConfig(NUM_BLOCKS),
                             policy)
    sampling = SamplingParams(max_tokens=24, temperature=0.8, seed=2, ignore_eos=True)
    reqs = [engine.add_request(p, sampling, DecodeParams(mode=m), slo=SLO(tpot_ms=t))
            for p, m, t in zip(prompts[:2], [PIPELINED, Mode.AUTO], [None, 20.0],
                               strict=True)]
    done = {}
    while engine.has_unfinished():
        done.update({o.request_id: o for o in engine.step() if o.finished})
    assert [done[r.id].token_ids for r in reqs] == _ar(fused, prompts[:2], sampling)
    assert done[reqs[0].id].modes.get("spec_pipelined", 0) > 0
