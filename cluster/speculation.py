"""The `speculation:` section of the serving config: where drafting and verifying run.

    speculation:
      placement: disaggregated        # fused (default): one shard group does both
      draft: {tp: 1, dtype: bfloat16, replicas: 1}
      verify: {tp: 2}

With `disaggregated` a replica drives a verify pool (the replica's own placement group:
bundle 0 the replica, then one bundle per verify rank, STRICT_PACK) and `draft.replicas`
draft pools, each in a STRICT_PACK placement group of its own that the replica reserves
(each pool packed on one node; the pools may sit on different nodes). Requests may then ask
for `spec_pipelined` (actors/pipelined_engine.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Dtype = Literal["float32", "bfloat16", "float16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class DraftPoolSettings(_Strict):
    tp: int = Field(1, ge=1, le=64, description="Tensor-parallel ranks of each draft pool.")
    dtype: Dtype = Field("float32", description="Weights and KV dtype of the draft pools "
                         "(may differ from the verify pool's: the output stays AR's).")
    replicas: int = Field(1, ge=1, le=16, description="Draft pools per model-server replica; "
                          "requests are spread over them.")


class VerifyPoolSettings(_Strict):
    tp: int | None = Field(None, ge=1, le=64, description="Tensor-parallel ranks of the verify "
                           "pool; default: model.tp.")
    dtype: Dtype = Field("float32", description="Weights and KV dtype of the verify pool.")


class SpeculationSettings(_Strict):
    placement: Literal["fused", "disaggregated"] = Field(
        "fused", description="fused: one shard group drafts and verifies (spec_linear, "
        "spec_quadratic); disaggregated: a draft pool and a verify pool, and spec_pipelined.")
    draft: DraftPoolSettings = Field(default_factory=DraftPoolSettings,
                                     description="The draft pools (disaggregated only).")
    verify: VerifyPoolSettings = Field(default_factory=VerifyPoolSettings,
                                       description="The verify pool (disaggregated only).")
    hedge: bool = Field(False, description="Draft the next block for every acceptance length "
                        "instead of full acceptance only (no redraft step; more draft work).")

    @property
    def is_disaggregated(self) -> bool:
        return self.placement == "disaggregated"

    def verify_tp(self, model_tp: int) -> int:
        return self.verify.tp or model_tp

    def rank_bundle(self, device: str, cpus: float, gpus: float) -> dict[str, float]:
        bundle = {"CPU": cpus}
        if device == "cuda":
            bundle["GPU"] = gpus
        return bundle

    def draft_bundles(self, device: str, cpus: float, gpus: float
                      ) -> list[list[dict[str, float]]]:
        """One placement group (STRICT_PACK) per draft pool, one bundle per rank."""
        if not self.is_disaggregated:
            return []
        return [[self.rank_bundle(device, cpus, gpus) for _ in range(self.draft.tp)]
                for _ in range(self.draft.replicas)]


def check_against_model(spec: SpeculationSettings, model_tp: int, auto_mode: Any,  # noqa: ANN401
                        default_mode: Any) -> None:  # noqa: ANN401
    """Raise ValueError (naming the field) for a speculation section the model contradicts."""
    if spec.is_disaggregated:
        if spec.verify.tp is not None and model_tp > 1 and spec.verify.tp != model_tp:
            raise ValueError(f"speculation.verify.tp ({spec.verify.tp}) contradicts model.tp "
                             f"({model_tp}): give one of them")
        return
    for name, mode in (("model.auto_mode", auto_mode), ("model.default_mode", default_mode)):
        if getattr(mode, "value", mode) == "spec_pipelined":
            raise ValueError(f"{name}: spec_pipelined needs speculation.placement: "
                             "disaggregated")


def build_disaggregated(config: Any, policy: Any, in_replica: bool = True) -> Any:  # noqa: ANN401
    """The replica's PipelinedEngine (config: a TandemConfig). Inside a Serve replica the
    verify ranks take bundles 1.. of the replica's placement group."""
    import ray

    from actors.pipelined_engine import PoolShape, disaggregated_engine

    m, spec = config.model, config.speculation
    verify = PoolShape(tp=spec.verify_tp(m.tp), dtype=spec.verify.dtype)
    draft = PoolShape(tp=spec.draft.tp, dtype=spec.draft.dtype, replicas=spec.draft.replicas)
    pg = ray.util.get_current_placement_group() if in_replica else None
    return disaggregated_engine(m.model_dir, verify, draft, config.engine_config(),
                                device=m.device, policy=policy, hedge=spec.hedge,
                                verify_placement=pg, verify_bundle_offset=1 if pg else 0,
                                num_cpus_per_rank=config.shards.cpus_per_rank)


def slo_policy_config(config: Any) -> Any:  # noqa: ANN401
    """The SLO policy's config for a TandemConfig: with a draft pool, auto may also choose
    pipelined speculation (policies/option.py PIPELINED_CANDIDATES); the model's bounds on
    auto's blocks and diffusion threshold; None when all are the defaults."""
    from policies.option import PIPELINED_CANDIDATES
    from policies.policy import PolicyConfig
    from policies.selector import LADDER, SelectorConfig

    m, kwargs = config.model, {}
    if config.speculation.is_disaggregated:
        kwargs["pool"] = LADDER + PIPELINED_CANDIDATES
    if m.auto_block_bounds is not None:
        kwargs["block_bounds"] = tuple((mode.value, lo, hi)
                                       for mode, (lo, hi) in m.auto_block_bounds.items())
    if m.auto_threshold_bounds is not None:
        kwargs["threshold_bounds"] = tuple(m.auto_threshold_bounds)
    return PolicyConfig(selector=SelectorConfig(**kwargs)) if kwargs else None
