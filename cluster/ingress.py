"""The HTTP ingress: OpenAI's API on FastAPI under @serve.ingress.

It validates bodies (pydantic, unknown fields refused), checks the key and the model name,
turns a body into a GenerateJob, and calls the model server through a DeploymentHandle with
stream=True: the first item says accepted or refused (so a refusal gets a real HTTP status),
the rest are events, forwarded as server-sent events or gathered into one response. When the
client goes away the handle's generator is cancelled, and the model server aborts the job.
"""

# No `from __future__ import annotations` here: Serve's class-based view re-creates the route
# functions, and FastAPI then cannot resolve string annotations (the body arrives unparsed).
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster import failover, job_builder, limits
from cluster.config import TandemConfig, load_config
from cluster.job import ChoiceEvent, GenerateJob, JobAccepted, JobError
from cluster.job_builder import BadRequest
from cluster.metrics_board import BoardClient, merge
from cluster.openai_protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    error_body,
)
from cluster.responses import ResponseBuilder

app = FastAPI(title="tandem", description="OpenAI-compatible tri-mode LLM server")
app.add_middleware(limits.BodySizeLimit)  # 413 over config.limits.max_body_bytes


def _error(status: int, message: str, param: str | None = None,
           type_: str = "invalid_request_error", code: str | int | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status)


@app.exception_handler(RequestValidationError)
async def _invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    return await _bad_request(request, job_builder.invalid_body(list(exc.errors())))


@app.exception_handler(BadRequest)
async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
    return _error(exc.status, exc.message, exc.param, exc.type, exc.code)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail), None,
                  "not_found_error" if exc.status_code == 404 else "invalid_request_error")


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _refusal(err: JobError) -> BadRequest:
    return BadRequest(err.status, err.message, err.param, err.type)


@serve.ingress(app)
class OpenAIIngress:
    def __init__(self, model_server: DeploymentHandle,
                 config: TandemConfig | dict[str, Any] | None = None) -> None:
        self.server = model_server
        self.config = load_config(config)
        self.model_name = self.config.model.name
        app.state.max_body_bytes = self.config.limits.max_body_bytes
        self.board = BoardClient(self._app_name())

    @staticmethod
    def _app_name() -> str:
        try:
            return serve.get_replica_context().app_name
        except Exception:
            return "default"

    # --- plain endpoints ---------------------------------------------------------------------

    @app.get("/health")
    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.model_name, **await self.server.health.remote()}

    @app.get("/metrics")
    async def metrics(self) -> PlainTextResponse:
        replica, text = await self.server.metrics.remote()
        texts = await self.board.get()
        texts[replica] = text  # the replica we reached is fresher than its last push
        return PlainTextResponse(merge(texts), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        info = await self.server.model_info.remote()
        return {"object": "list", "data": [{
            "id": self.model_name, "object": "model", "created": 0, "owned_by": "tandem",
            "max_model_len": info["max_model_len"]}]}

    # --- generation --------------------------------------------------------------------------

    @app.post("/v1/completions")
    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        limits.check_completion(body, self.config.limits)
        self._check(request, body.model)
        rid = f"cmpl-{uuid.uuid4().hex}"
        job = job_builder.completion_job(body, self.config, rid)
        builder = ResponseBuilder("completion", rid, self.model_name, len(job.choices), body.n,
                                  body.logprobs)
        return await self._run(job, builder, body.stream, body.include_usage)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Any:
        limits.check_chat(body, self.config.limits)
        self._check(request, body.model)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        job = job_builder.chat_job(body, self.config, rid)
        builder = ResponseBuilder("chat", rid, self.model_name, len(job.choices), body.n,
                                  job.logprobs)
        return await self._run(job, builder, body.stream, body.include_usage)

    def _check(self, request: Request, model: str | None) -> None:
        self._authorize(request)
        job_builder.check_model(model, self.model_name)

    def _authorize(self, request: Request) -> None:
        keys = self.config.api_keys
        if not keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(
                hmac.compare_digest(token.strip().encode(), k.encode()) for k in keys):
            raise BadRequest(401, "Missing or incorrect API key: send "
                                  "`Authorization: Bearer <key>`.", None,
                             code="invalid_api_key")

    async def _run(self, job: GenerateJob, builder: ResponseBuilder, stream: bool,
                   include_usage: bool) -> Any:
        gen, first = await failover.first_item(
            lambda: self.server.options(stream=True).generate.remote(job))
        if isinstance(first, JobError):
            raise _refusal(first)
        assert isinstance(first, JobAccepted)
        if stream:
            return StreamingResponse(self._stream(gen, builder, include_usage),
                                     media_type="text/event-stream")
        done = False
        try:
            async for item in gen:
                if isinstance(item, JobError):
                    raise _refusal(item)
                builder.add([ChoiceEvent.from_wire(e) for e in item])
            done = True
        except failover.REPLICA_LOST as err:
            done = True
            raise failover.lost(err) from None
        finally:
            if not done:  # this handler was cancelled (client gone): abort the job
                gen.cancel()
        return builder.response()

    async def _stream(self, gen: AsyncIterator[Any], builder: ResponseBuilder,
                      include_usage: bool) -> AsyncIterator[str]:
        done = False
        try:
            for chunk in builder.role_chunks():
                yield _sse(chunk)
            try:
                async for item in gen:
                    if isinstance(item, JobError):
                        yield _sse(error_body(item.message, item.type, item.param))
                        break
                    events = [ChoiceEvent.from_wire(e) for e in item]
                    payload = "".join(_sse(chunk) for chunk in builder.add(events))
                    if payload:  # one write per item, however many chunks it makes
                        yield payload
            except failover.REPLICA_LOST as err:  # an error event, not a cut connection
                yield _sse(error_body(failover.lost_message(err), "server_error"))
            done = True
            if include_usage:
                yield _sse(builder.usage_chunk())
            yield "data: [DONE]\n\n"
        finally:
            if not done:  # the client disconnected mid-stream: abort the job, free its KV
                gen.cancel()  # type: ignore[attr-defined]
