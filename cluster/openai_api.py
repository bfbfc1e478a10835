"""OpenAI's API over a model server: the routes, and the logic behind them.

`build_api(api)` makes the FastAPI app of one replica (Serve calls the deployment's
`__serve_build_asgi_app__` after its constructor); each route hands its request to that
replica's `OpenAIApi`, which bounds the request (cluster/limits.py), validates the body
(pydantic, unknown fields refused), checks the key and the model name, turns the body into
a GenerateJob and streams the model server's events back as server-sent events or gathers
them into one response. The first item of a job says accepted or refused, so a refusal
gets a real HTTP status. When the client goes away the job's stream is closed and the
model server aborts the job.

The model server is reached through a Backend: a DeploymentHandle (cluster/ingress.py: the
ingress as its own deployment) or the same replica (cluster/openai_server.py: the ingress
folded into the model server, no Ray hop per token).
"""

# No `from __future__ import annotations` here: FastAPI resolves the route functions'
# annotations at runtime (string annotations would leave the body unparsed).
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster import inline_body, job_builder, limits, proxy_receive
from cluster.config import TandemConfig
from cluster.job import ChoiceEvent, GenerateJob, JobAccepted, JobError
from cluster.job_builder import BadRequest
from cluster.metrics_board import BoardClient, merge
from cluster.openai_protocol import ChatCompletionRequest, CompletionRequest, error_body
from cluster.responses import ResponseBuilder


class Backend(Protocol):
    """The model server as the API sees it."""

    def stream(self, job: GenerateJob) -> AsyncIterator[JobAccepted | JobError |
                                                         list[ChoiceEvent]]: ...

    async def close(self, stream: AsyncIterator[Any]) -> None: ...

    async def call(self, method: str) -> Any: ...


def _error(status: int, message: str, param: str | None = None,
           type_: str = "invalid_request_error", code: str | int | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status)


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _refusal(err: JobError) -> BadRequest:
    return BadRequest(err.status, err.message, err.param, err.type)


class OpenAIApi:
    """The endpoints' logic; a deployment class mixes it in and sets config and backend."""

    config: TandemConfig
    backend: Backend
    board: BoardClient

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve asks for the replica's app here, once the constructor has run (in the
        replica's process: no call back to the proxy for a body it carried, from here on)."""
        proxy_receive.install()
        return build_api(self)

    @property
    def model_name(self) -> str:
        return self.config.model.name

    async def api_health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.model_name, **await self.backend.call("health")}

    async def api_metrics(self) -> PlainTextResponse:
        replica, text = await self.backend.call("metrics")
        texts = await self.board.get()
        texts[replica] = text  # the replica we reached is fresher than its last push
        return PlainTextResponse(merge(texts), media_type=CONTENT_TYPE_LATEST)

    async def api_models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        info = await self.backend.call("model_info")
        return {"object": "list", "data": [{
            "id": self.model_name, "object": "model", "created": 0, "owned_by": "tandem",
            "max_model_len": info["max_model_len"]}]}

    async def api_completions(self, body: CompletionRequest, request: Request) -> Any:
        limits.check_completion(body, self.config.limits)
        self._check(request, body.model)
        rid = f"cmpl-{uuid.uuid4().hex}"
        job = job_builder.completion_job(body, self.config, rid)
        builder = ResponseBuilder("completion", rid, self.model_name, len(job.choices), body.n,
                                  body.logprobs)
        return await self._run(job, builder, body.stream, body.include_usage)

    async def api_chat(self, body: ChatCompletionRequest, request: Request) -> Any:
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
        gen = self.backend.stream(job)
        try:
            first = await gen.__anext__()
        except BaseException:
            await self.backend.close(gen)
            raise
        if isinstance(first, JobError):
            await self.backend.close(gen)
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
                builder.add(item)
            done = True
        finally:
            if not done:  # this handler was cancelled (client gone): abort the job
                await self.backend.close(gen)
        return builder.response()

    async def _stream(self, gen: AsyncIterator[Any], builder: ResponseBuilder,
                      include_usage: bool) -> AsyncIterator[str]:
        done = False
        try:
            for chunk in builder.role_chunks():
                yield _sse(chunk)
            async for item in gen:
                if isinstance(item, JobError):
                    yield _sse(error_body(item.message, item.type, item.param))
                    break
                payload = "".join(_sse(chunk) for chunk in builder.add(item))
                if payload:  # one write per item, however many chunks it makes
                    yield payload
            done = True
            if include_usage:
                yield _sse(builder.usage_chunk())
            yield "data: [DONE]\n\n"
        finally:
            if not done:  # the client disconnected mid-stream: abort the job, free its KV
                await self.backend.close(gen)


def build_api(api: OpenAIApi) -> FastAPI:
    """One replica's app: its routes call `api`."""
    app = FastAPI(title="tandem", description="OpenAI-compatible tri-mode LLM server")
    app.add_middleware(limits.BodySizeLimit)  # 413 over config.limits.max_body_bytes
    app.state.max_body_bytes = api.config.limits.max_body_bytes
    if inline_body.enabled():  # outermost: the body the proxy carried with the request
        app.add_middleware(inline_body.InlineBody)

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

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return await api.api_health()

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return await api.api_metrics()

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        return await api.api_models(request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await api.api_completions(body, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        return await api.api_chat(body, request)

    return app
