"""One Batch request -> the HTTP API's validation and generation -> the answer the API gives.

The one place where a batch job meets the serving code: the body is validated by the same
pydantic models (cluster/openai_protocol.py) and request limits (cluster/limits.py, the
body-size 413 included: measured on the body's compact JSON), refused with the same error bodies
(job_builder.invalid_body / check_model, which the ingress uses too), turned into the same
GenerateJob (job_builder), run by the model server's `generate` stream through a Ray Serve
DeploymentHandle exactly as the ingress runs it, and answered with the same response body
(cluster/responses.py). When the serving side changes, this file is what adapts.

What a batch job adds to a request (`Steering`): a priority below online traffic, its share
of the job's deadline as the SLO's deadline_ms (best-effort: never refused as infeasible),
for an auto request AR while the job is on schedule and the fastest option while it is
behind (pacer.py), and a seed derived from the
custom_id when the body sets none, so a resumed job reproduces a clean run (the HTTP API
draws a random seed then; any seed is within its contract).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError
from ray.exceptions import RayError
from ray.serve.handle import DeploymentHandle

from cluster import failover, job_builder, limits
from cluster.batch.lines import BatchLine
from cluster.config import TandemConfig
from cluster.job import ChoiceEvent, GenerateJob, JobAccepted, JobError
from cluster.job_builder import BadRequest
from cluster.openai_protocol import ChatCompletionRequest, CompletionRequest, error_body
from cluster.responses import ResponseBuilder
from cluster.slo import MAX_SLO_MS, SLOSpec
from engine.params import Mode
from policies.option import Option

# The model server sends a batch request's tokens at most this often (not the server's
# 50 ms: nobody reads them token by token; 5x fewer Ray messages per request). The pacer's
# progress comes from them (its rate is taken over 2 s at least: pacer.py).
STREAM_INTERVAL_MS = 250.0

MODELS: dict[str, type[CompletionRequest] | type[ChatCompletionRequest]] = {
    "completion": CompletionRequest, "chat": ChatCompletionRequest}


@dataclass(frozen=True)
class Steering:
    priority: int = -1  # a cap: a body's own priority is kept when lower
    deadline_ms: float | None = None  # this request's share of the job's deadline
    option: Option | None = None  # an auto request runs this (pacer.py); None: auto

    def __post_init__(self) -> None:
        if self.deadline_ms is not None and not 0 < self.deadline_ms <= MAX_SLO_MS:
            raise ValueError(f"deadline_ms must be in (0, {MAX_SLO_MS:g}], got "
                             f"{self.deadline_ms}")


@dataclass(frozen=True)
class DeviceWork:
    """Tokens put through the model for one job, by mode ("prefill" apart); sent last by
    replicas that meter their executor (cluster/batch/replicas.py)."""

    tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """What the HTTP API would have answered (status_code and body), or, when no answer
    came at all (a replica died), `error` instead."""

    request_id: str
    status_code: int | None
    body: dict[str, Any] | None
    error: dict[str, str] | None = None
    device_tokens: dict[str, int] = field(default_factory=dict)

    @property
    def num_output_tokens(self) -> int:
        """Completion tokens of an answered request (0 for a refusal or failure)."""
        usage = (self.body or {}).get("usage") or {}
        return usage.get("completion_tokens", 0) if self.status_code == 200 else 0

    @property
    def is_transient(self) -> bool:
        """Worth one more try: no answer, or a server-side failure."""
        return self.status_code is None or self.status_code >= 500


def seed_of(custom_id: str) -> int:
    return int.from_bytes(hashlib.sha256(custom_id.encode()).digest()[:8], "big") % 2**63


class Adapter:
    def __init__(self, config: TandemConfig, server: DeploymentHandle,
                 model_name: str | None = None) -> None:
        self.config, self.server = config, server
        self.model_name = model_name or config.model.name

    def prepare(self, line: BatchLine, steer: Steering
                ) -> tuple[GenerateJob, ResponseBuilder] | Answer:
        """The job the HTTP API would run for this body, or its refusal."""
        prefix = "cmpl" if line.kind == "completion" else "chatcmpl"
        rid = f"{prefix}-{uuid.uuid4().hex}"
        try:
            limits.check_body_size(line.body, self.config.limits.max_body_bytes)
            body = MODELS[line.kind].model_validate(line.body)
        except BadRequest as err:
            return _refusal(rid, err)
        except ValidationError as err:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in err.errors()]
            return _refusal(rid, job_builder.invalid_body(errors))
        try:
            if isinstance(body, CompletionRequest):
                limits.check_completion(body, self.config.limits)
            else:
                limits.check_chat(body, self.config.limits)
            job_builder.check_model(body.model, self.model_name)
            if body.stream:
                raise BadRequest(400, "stream: a batch request cannot stream", "stream")
            body = self._steer(body, line.custom_id, steer)
            if isinstance(body, CompletionRequest):
                job = job_builder.completion_job(body, self.config, rid)
                lps = body.logprobs
            else:
                job = job_builder.chat_job(body, self.config, rid)
                lps = job.logprobs
        except BadRequest as err:
            return _refusal(rid, err)
        builder = ResponseBuilder(line.kind, rid, self.model_name, len(job.choices), body.n,
                                  lps)
        return replace(job, stream_interval_ms=STREAM_INTERVAL_MS), builder

    def _steer(self, body: BaseModel, custom_id: str, steer: Steering) -> Any:
        update: dict[str, Any] = {"priority": min(body.priority, steer.priority)}
        if body.seed is None:
            update["seed"] = seed_of(custom_id)
        model = self.config.model
        opt = steer.option
        if (opt is not None and (body.mode or model.default_mode) is Mode.AUTO
                and Mode(opt.mode) in model.allowed_modes):
            update["mode"] = Mode(opt.mode)
            update["block_length"] = None if opt.mode == Mode.AR else opt.block
        if steer.deadline_ms is not None:
            base = body.slo or self.config.model.default_slo or SLOSpec()
            mine = min(x for x in (base.deadline_ms, steer.deadline_ms) if x is not None)
            update["slo"] = base.model_copy(update={"deadline_ms": mine, "best_effort": True})
        return body.model_copy(update=update)

    async def answer(self, line: BatchLine, steer: Steering,
                     produced: Callable[[int], None] = lambda n: None) -> Answer:
        prepared = self.prepare(line, steer)
        if isinstance(prepared, Answer):
            return prepared
        job, builder = prepared
        return await self.run(job, builder, produced)

    async def run(self, job: GenerateJob, builder: ResponseBuilder,
                  produced: Callable[[int], None] = lambda n: None) -> Answer:
        """The ingress's non-streaming path: accepted or refused first (resent while the
        replica is lost before it answered: cluster/failover.py), then the events
        (`produced` is told the tokens of each as it comes)."""
        try:
            gen, first = await failover.first_item(
                lambda: self.server.options(stream=True).generate.remote(job))
        except BadRequest as err:  # lost every time it was sent: the API's 503
            return _refusal(job.id, err)
        except RayError as err:  # the call failed otherwise: no HTTP answer
            return Answer(job.id, None, None, {"code": "server_error", "message": str(err)})
        if isinstance(first, JobError):
            gen.cancel()  # a metered replica would still send its DeviceWork
            return _job_error(job.id, first)
        assert isinstance(first, JobAccepted), type(first)
        done, result, work = False, None, DeviceWork()
        try:
            async for item in gen:
                if isinstance(item, DeviceWork):
                    work = item
                elif isinstance(item, JobError):
                    result = result or _job_error(job.id, item)
                else:
                    events = [ChoiceEvent.from_wire(e) for e in item]
                    builder.add(events)
                    produced(sum(len(e.token_ids) for e in events))
            done = True
        except failover.REPLICA_LOST as err:  # lost mid-answer: the API's 503
            done = True
            return _refusal(job.id, failover.lost(err))
        except RayError as err:
            done = True
            return Answer(job.id, None, None, {"code": "server_error", "message": str(err)})
        finally:
            if not done:  # cancelled (Ctrl-C): abort the job on the replica
                gen.cancel()
        if result is None:
            result = Answer(job.id, 200, builder.response())
        return Answer(result.request_id, result.status_code, result.body, result.error,
                      dict(work.tokens))


def _refusal(rid: str, err: BadRequest) -> Answer:
    return Answer(rid, err.status, error_body(err.message, err.type, err.param, err.code))


def _job_error(rid: str, err: JobError) -> Answer:
    return Answer(rid, err.status, error_body(err.message, err.type, err.param))
