"""The diffusion commit threshold a policy chooses per request reaches the mode, and is
reported per request in forwards_by_block ("diffusion/B@T")."""

from __future__ import annotations

from engine.engine import EngineConfig, LLMEngine
from engine.executor import ModelExecutor
from engine.params import DecodeParams, Mode, SamplingParams
from engine.policy import FirstComePolicy, SchedulingPolicy
from engine.scheduler import SchedulerConfig
from policies.decision import BatchDecision, SchedulerView
from policies.option import Option


class WithThresholds(SchedulingPolicy):
    """First-come with every request in diffusion B=8 at a given threshold per request."""

    def __init__(self, thresholds: dict[str, float]) -> None:
        self.inner, self.thresholds = FirstComePolicy(), thresholds

    def plan(self, view: SchedulerView) -> BatchDecision:
        d = self.inner.plan(view)
        options = {k: Option(Mode.DIFFUSION, 8) for k in d.options}
        return BatchDecision(d.order, options, d.deferred, d.victims,
                             {k: t for k, t in self.thresholds.items() if k in options})


def test_the_policy_threshold_sets_how_much_each_pass_commits(tiny_model, codec) -> None:
    config = EngineConfig(num_blocks=64, scheduler=SchedulerConfig(max_num_seqs=4))
    engine = LLMEngine(ModelExecutor(tiny_model, 64), tiny_model.config, codec, config,
                       WithThresholds({"loose": 0.01, "strict": 1.0}))
    for rid in ("loose", "strict", "own"):
        engine.add_request("def add(a, b):", SamplingParams(max_tokens=16, ignore_eos=True,
                                                             seed=1),
                           DecodeParams(mode=Mode.AUTO, allow_lossy=True), request_id=rid)
    outs = {}
    while engine.has_unfinished():
        outs.update({o.request_id: o for o in engine.step() if o.finished})
    loose, strict, own = (outs[k].forwards_by_block for k in ("loose", "strict", "own"))
    assert set(loose) == {"diffusion/8@0.01"} and set(strict) == {"diffusion/8@1.00"}
    assert set(own) == {"diffusion/8"}  # no threshold chosen: the request's own (0.9)
    # At 0.01 each block fills in one denoise pass (+ its commit pass); at 1.0 one
    # position a pass, unless the model is certain of several.
    assert loose["diffusion/8@0.01"] == 2 * 2
    assert strict["diffusion/8@1.00"] > loose["diffusion/8@0.01"]
