"""The deployment config: one pydantic model, validated once where YAML (or a builder's args)
comes in, then converted to the engine's frozen dataclasses. Placement-group bundles are
derived from tp here; nobody writes them by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.openai_protocol import MAX_MESSAGES, MAX_N, MAX_STOP
from cluster.slo import SLOSpec
from cluster.speculation import SpeculationSettings, check_against_model
from engine.engine import EngineConfig
from engine.kv_sizing import DEFAULT_NUM_BLOCKS, KVRequest
from engine.params import Mode
from engine.scheduler import SchedulerConfig
from models.checkpoint import DEFAULT_MODEL_DIR
from policies.bounds import check_block_bounds, check_threshold_bounds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class ModelSettings(_Strict):
    """What one replica serves and how its engine is sized."""

    model_dir: str = Field(str(DEFAULT_MODEL_DIR),
                           description="Hugging Face checkpoint directory (config.json, "
                                       "*.safetensors, tokenizer.json).")
    served_model_name: str | None = Field(
        None, description="Name clients pass as `model`; default: the directory's name.")
    tp: int = Field(1, ge=1, le=64, description="Tensor-parallel shards per replica. 1 runs the "
                    "engine in the replica's process; >= 2 drives a group of shard actors.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the weights and KV live.")
    allowed_modes: list[Mode] = Field(
        default_factory=lambda: list(Mode),
        description="Decoding modes clients may ask for (auto included or not).")
    default_mode: Mode = Field(Mode.AUTO, description="Mode of a request that names none.")
    auto_mode: Mode = Field(Mode.SPEC_QUADRATIC, description="What `auto` resolves to when no "
                            "SLO-aware policy is installed (a concrete, lossless mode).")
    policy: Literal["auto", "first_come", "slo"] = Field(
        "auto", description="Scheduling policy: slo = the SLO-aware policy "
        "(engine/slo_policy.py, needs slo_profile); first_come = arrival order, auto -> "
        "auto_mode; auto = slo when the profile file is there, else first_come (logged).")
    slo_profile: str | None = Field(
        None, description="Step-cost profile of this machine for the SLO policy (written by "
        "bench/calibrate.py); default: bench/slo_profile.json when present.")
    default_slo: SLOSpec | None = Field(None, description="SLO of a request that sets none.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens of a chat request that "
                                    "sets none (completions default to 16, as OpenAI's do).")
    max_batch_tokens: int = Field(2048, ge=1, description="Token budget of one engine step.")
    max_num_seqs: int = Field(64, ge=1, description="Requests running at once per replica.")
    num_kv_blocks: int | None = Field(
        None, ge=1, description="KV cache blocks per replica: overrides the two sizes from "
        "memory below. With none of the three: 512 blocks.")
    kv_cache_memory_gb: float | None = Field(
        None, gt=0, description="CPU: GiB of KV cache per rank; blocks = this / bytes per block "
        "(layers x 2 x block_size x local kv heads x head_dim x dtype size).")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="CUDA (tp = 1): the fraction of the device the replica "
        "may use; the KV cache gets what the weights and a measured activation peak leave.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights, activations and KV cache: auto = the checkpoint's "
        "torch_dtype on CUDA, float32 on CPU.")
    block_size: int = Field(16, ge=1, description="Tokens per KV cache block.")
    max_model_len: int | None = Field(None, ge=2, description="Context limit in tokens (prompt "
                                      "+ output); default: the model's max positions.")
    stream_interval_ms: float = Field(
        50.0, ge=0, le=1000, description="Send a stream's tokens at most this often (the first "
        "at once; tokens in between are coalesced into one chunk; all of a replica's streams "
        "are released on one tick); 0 = every step. Trades inter-chunk latency for less proxy "
        "and replica CPU per token (each chunk is one Ray message to the Serve proxy); 50 ms "
        "is Ray Serve LLM's default batching interval.")
    stream_max_chunks_per_s: float = Field(
        400.0, ge=0, description="Send at most this many chunks a second over all of a "
        "replica's streams (0 = no cap): with n streams the release tick is max("
        "stream_interval_ms, n / this), so under load each chunk carries more tokens. A chunk "
        "costs CPU in the replica, the Serve proxy and the client whatever it carries; 400 "
        "leaves the tick at 50 ms up to 20 streams and makes it 160 ms at 64 (`tandem bench "
        "serve`, BENCHMARKS.md > Serving).")
    stream_max_interval_ms: float = Field(
        200.0, ge=0, le=1000, description="The longest the chunk cap may stretch the release "
        "tick (a stream's chunks are never further apart than this, or stream_interval_ms "
        "if longer, plus a step).")
    admit_hold_steps: int = Field(
        0, ge=0, le=64, description="The engine core may hold a request that reaches a busy "
        "engine for up to this many steps, so that requests arriving one by one join the batch "
        "together (their prefills in one step; cluster/admission_gate.py). Never a request "
        "with an SLO, nor one that finds the engine idle. 0: admit before the next step. Only "
        "the engine-core process has the gate (tp = 1).")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads in the "
                                      "replica (None: leave Ray's / torch's default).")
    engine_core_cpus: list[int] | Literal["auto"] | None = Field(
        None, description="CPUs the engine-core process runs on, alone: it pins itself to "
        "them, the replica keeps off them, and so do Serve's proxy and controller if their "
        "environment names them (cluster/cpu_placement.py PROXY_ENV, in controller_options). "
        "For one replica per node on a CPU box, where the step loop and the serving processes "
        "share the cores (the replica and the proxy wake for every request and chunk, and on a "
        "shared CPU each wake-up preempts the step loop). `auto`: the replica's last "
        "torch_threads CPUs (1 if unset) when it has more than that, else no pinning (the "
        "proxy and the controller avoid the last CPU: for a 1-thread core). None: no pinning.")
    engine_core_nice: int | None = Field(
        0, ge=-20, le=19, description="The engine-core process's niceness. Ray starts its "
        "workers at 15 (RAY_worker_niceness) unless told otherwise (`tandem serve` tells it "
        "0), and the core would inherit that from the replica, ranking the step loop below "
        "every ordinary process on the node. Lowering it needs CAP_SYS_NICE (root has it); "
        "without, a warning and the inherited value. None: inherit.")
    engine_core: Literal["auto", "process", "thread"] = Field(
        "auto", description="Where a replica's engine runs: `process` = an engine-core "
        "process beside the replica (its step loop never waits on the replica's event loop "
        "or GIL); `thread` = a thread of the replica; auto = process at tp = 1 (fused "
        "speculation) unless a test injects an engine factory, else thread (shard or draft "
        "actors do the forwards).")

    auto_block_bounds: dict[Mode, tuple[int, int]] | None = Field(
        None, description="Per mode, the shortest and longest block the SLO policy may give "
        "an `auto` request (chosen per request from its own acceptance and pace); default: "
        "spec_linear 4-8, spec_quadratic 2-6, diffusion 8-16 (policies/selector.py); a mode "
        "left out may take any block of the selector's ladder.")
    auto_threshold_bounds: tuple[float, float] | None = Field(
        None, description="The lowest and highest diffusion commit threshold the SLO policy "
        "may give an `auto` request that allows lossy output (chosen per request from its own "
        "acceptance: policies/bounds.py); default 0.7-0.95.")

    @field_validator("auto_block_bounds")
    @classmethod
    def _check_block_bounds(cls, v: dict[Mode, tuple[int, int]] | None
                            ) -> dict[Mode, tuple[int, int]] | None:
        if v is not None:
            check_block_bounds(tuple((m.value, lo, hi) for m, (lo, hi) in v.items()),
                               "auto_block_bounds")
        return v

    @field_validator("auto_threshold_bounds")
    @classmethod
    def _check_threshold_bounds(cls, v: tuple[float, float] | None
                                ) -> tuple[float, float] | None:
        if v is not None:
            check_threshold_bounds(v, "auto_threshold_bounds")
        return v

    @field_validator("engine_core_cpus")
    @classmethod
    def _check_cpus(cls, v: list[int] | str | None) -> list[int] | str | None:
        if isinstance(v, list) and (not v or min(v) < 0 or len(set(v)) != len(v)):
            raise ValueError(f"engine_core_cpus: distinct CPU numbers >= 0, got {v}")
        return v

    @model_validator(mode="after")
    def _check_modes(self) -> ModelSettings:
        if not self.allowed_modes:
            raise ValueError("allowed_modes: at least one mode")
        if self.default_mode not in self.allowed_modes:
            raise ValueError(f"default_mode {self.default_mode.value!r} is not in allowed_modes")
        if self.auto_mode is Mode.AUTO or not self.auto_mode.is_lossless:
            raise ValueError("auto_mode must be ar, spec_linear or spec_quadratic")
        return self

    @property
    def name(self) -> str:
        return self.served_model_name or Path(self.model_dir).name


class ActorOptions(_Strict):
    num_cpus: float = Field(0, ge=0, description="Logical CPUs the replica actor takes. 0 on a "
                            "small CPU box, or serve.run waits forever for a free CPU.")
    num_gpus: float = Field(0, ge=0, description="GPUs of the replica actor itself (tp = 1).")
    memory: int | None = Field(None, ge=0, description="Bytes of memory to reserve.")
    resources: dict[str, float] = Field(default_factory=dict,
                                        description="Custom Ray resources.")
    runtime_env: dict[str, Any] = Field(default_factory=dict,
                                        description="Ray runtime_env (env_vars, ...).")

    def to_ray(self) -> dict[str, Any]:
        opts = self.model_dump(exclude_none=True)
        return {k: v for k, v in opts.items() if v not in ({}, None)}


class DeploymentSettings(_Strict):
    """Ray Serve options of one deployment (model server or ingress)."""

    num_replicas: int | None = Field(1, ge=1, description="Fixed replica count (None when "
                                     "autoscaling_config is given).")
    autoscaling_config: dict[str, Any] | None = Field(
        None, description="Ray Serve autoscaling: min_replicas, max_replicas, "
                          "target_ongoing_requests, upscale_delay_s, downscale_delay_s, ...")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests a replica takes at once.")
    max_replicas_per_node: int | None = Field(
        None, ge=1, description="Spread replicas over nodes (1 = one replica per node).")
    graceful_shutdown_timeout_s: float | None = Field(
        None, ge=0, description="How long a replica that is going away (downscaling, a "
        "redeploy) may finish its open streams before it is killed; Serve's default: 20 s.")
    health_check_period_s: float | None = Field(
        None, gt=0, description="How often Serve checks that each replica is alive; a dead "
        "replica is replaced only after this (Serve's default: 10 s).")
    ray_actor_options: ActorOptions = Field(default_factory=ActorOptions,
                                            description="Resources of each replica actor.")

    @field_validator("autoscaling_config")
    @classmethod
    def _serve_checks(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            from ray.serve.config import AutoscalingConfig

            try:
                AutoscalingConfig(**v)
            except Exception as err:  # Serve's own validation, in its words
                raise ValueError(f"autoscaling_config: {err}") from None
        return v

    @model_validator(mode="after")
    def _one_scaling(self) -> DeploymentSettings:
        if self.autoscaling_config is not None and "num_replicas" in self.model_fields_set:
            raise ValueError("give num_replicas or autoscaling_config, not both")
        return self

    def to_serve(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"max_ongoing_requests": self.max_ongoing_requests,
                                "ray_actor_options": self.ray_actor_options.to_ray()}
        if self.autoscaling_config is not None:
            opts["autoscaling_config"] = dict(self.autoscaling_config)
        else:
            opts["num_replicas"] = self.num_replicas
        if self.max_replicas_per_node is not None:
            opts["max_replicas_per_node"] = self.max_replicas_per_node
        for name in ("graceful_shutdown_timeout_s", "health_check_period_s"):
            if (value := getattr(self, name)) is not None:
                opts[name] = value
        return opts


class ShardSettings(_Strict):
    cpus_per_rank: float = Field(1, gt=0, description="Logical CPUs reserved per shard rank.")
    gpus_per_rank: float = Field(1, ge=0, description="GPUs per rank (device cuda only).")
    replica_cpus: float = Field(0.01, gt=0, description="CPUs of the replica's own bundle "
                                "(it only schedules; Ray refuses an empty bundle).")


class LimitSettings(_Strict):
    """What one request may ask (cluster/limits.py checks them at the HTTP edge): over a
    bound, 413 (body) or 400 naming the field, before any work is done."""

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Request body size.")
    max_prompt_chars: int = Field(200_000, ge=1, description="Characters of one prompt (or "
                                  "token ids of one token prompt; all messages of a chat).")
    max_prompts: int = Field(16, ge=1, description="Prompts in one completion request.")
    max_n: int = Field(MAX_N, ge=1, le=MAX_N, description="Choices per prompt.")
    max_stop: int = Field(MAX_STOP, ge=0, le=MAX_STOP, description="Stop strings.")
    max_stop_chars: int = Field(256, ge=1, description="Characters of one stop string.")
    max_messages: int = Field(256, ge=1, le=MAX_MESSAGES,
                              description="Messages in one chat request.")


class TandemConfig(_Strict):
    """Everything `cluster.app:build_app` needs; `serve run` passes it as the app's args."""

    model: ModelSettings = Field(default_factory=ModelSettings,
                                 description="The model and its engine.")
    model_server: DeploymentSettings = Field(default_factory=DeploymentSettings,
                                             description="The model-server deployment.")
    ingress: DeploymentSettings = Field(
        default_factory=lambda: DeploymentSettings(max_ongoing_requests=256),
        description="The HTTP ingress deployment.")
    shards: ShardSettings = Field(default_factory=ShardSettings,
                                  description="Placement of tensor-parallel ranks (tp >= 2).")
    limits: LimitSettings = Field(default_factory=LimitSettings,
                                  description="Bounds on one request (body, prompt, n, ...).")
    api_keys: list[str] = Field(default_factory=list, description="Accepted bearer tokens for "
                                "/v1/*; empty = no authentication.")
    speculation: SpeculationSettings = Field(
        default_factory=SpeculationSettings,
        description="Fused or disaggregated (draft pool + verify pool) self-speculation.")
    layout: Literal["single", "split"] = Field(
        "single", description="single = the OpenAI API folded into the model-server "
        "deployment (one Ray hop per streamed chunk; `ingress` unused); split = the API as a "
        "deployment of its own (`ingress`) calling the model server through a handle.")

    @model_validator(mode="after")
    def _check_speculation(self) -> TandemConfig:
        check_against_model(self.speculation, self.model.tp, self.model.auto_mode,
                            self.model.default_mode)
        return self

    @model_validator(mode="after")
    def _check_placement(self) -> TandemConfig:
        if self.model.tp >= 2 and self.model_server.max_replicas_per_node is not None:
            # Serve refuses it at deploy time (found by bench/multinode.py).
            raise ValueError("model_server.max_replicas_per_node: Ray Serve does not allow it "
                             "with placement groups (tp >= 2); size the shard group to a node "
                             "(STRICT_PACK) to place one replica per node")
        return self

    def engine_core_kind(self, has_factory: bool = False) -> str:
        kind = self.model.engine_core
        fused_tp1 = self.model.tp == 1 and not self.speculation.is_disaggregated
        if kind == "auto":
            kind = "process" if fused_tp1 and not has_factory else "thread"
        if kind == "process" and not fused_tp1:
            raise ValueError("model.engine_core: process serves tp = 1, fused speculation only "
                             "(otherwise Ray actors already run the forwards outside the "
                             "replica, and the core process has no Ray)")
        return kind

    def engine_config(self) -> EngineConfig:
        m = self.model
        sched = SchedulerConfig(max_batch_tokens=m.max_batch_tokens, max_num_seqs=m.max_num_seqs,
                                max_prefill_chunk=min(1024, m.max_batch_tokens))
        return EngineConfig(num_blocks=m.num_kv_blocks or DEFAULT_NUM_BLOCKS,
                            block_size=m.block_size,
                            max_model_len=m.max_model_len, scheduler=sched)

    def kv_request(self) -> KVRequest:
        m = self.model
        return KVRequest(m.num_kv_blocks, m.kv_cache_memory_gb, m.gpu_memory_utilization)

    def placement_bundles(self) -> list[dict[str, float]] | None:
        """[replica bundle] + one bundle per rank, packed on one node; None at tp = 1
        (fused). Disaggregated: the verify pool's ranks (even one); the draft pools reserve
        their own groups (draft_bundles)."""
        spec = self.speculation
        tp = spec.verify_tp(self.model.tp) if spec.is_disaggregated else self.model.tp
        if tp < 2 and not spec.is_disaggregated:
            return None
        replica = {"CPU": max(self.shards.replica_cpus,
                              self.model_server.ray_actor_options.num_cpus)}
        rank = spec.rank_bundle(self.model.device, self.shards.cpus_per_rank,
                                self.shards.gpus_per_rank)
        return [replica] + [dict(rank) for _ in range(tp)]

    def draft_bundles(self) -> list[list[dict[str, float]]]:
        """Disaggregated: one STRICT_PACK placement group per draft pool ([] when fused)."""
        return self.speculation.draft_bundles(self.model.device, self.shards.cpus_per_rank,
                                              self.shards.gpus_per_rank)

    def model_server_options(self) -> dict[str, Any]:
        opts = self.model_server.to_serve()
        bundles = self.placement_bundles()
        if bundles is not None:
            opts["placement_group_bundles"] = bundles
            opts["placement_group_strategy"] = "STRICT_PACK"
        return opts


def load_config(args: dict[str, Any] | TandemConfig | None) -> TandemConfig:
    """The one place where untyped config (YAML args, CLI) becomes a TandemConfig."""
    if isinstance(args, TandemConfig):
        return args
    return TandemConfig.model_validate(args or {})
