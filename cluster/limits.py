"""What one request may ask of the server, checked at the HTTP edge before any work: the
body's size (413), and per field (400 naming it): prompt length in characters, prompts per
request, n, stop strings, messages, and text that is not Unicode (a lone surrogate such as
"\\ud800" is valid JSON but no tokenizer or response encoder takes it). The bounds are the
config's `limits` (cluster/config.py LimitSettings); the API's own ceilings (n <= 16, ...)
stay in cluster/openai_protocol.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from cluster.job_builder import BadRequest
from cluster.openai_protocol import ChatCompletionRequest, CompletionRequest, _Common, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class BodySizeLimit:
    """ASGI middleware: a request body over `app.state.max_body_bytes` gets 413 in OpenAI's
    error shape, whether it declares its length or streams it chunked. The body is read
    here (at most the limit) and replayed to the app."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        state = getattr(scope.get("app"), "state", None)
        limit = getattr(state, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await _too_large(send, limit)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.app(scope, replay, send)


def too_large(limit: int) -> BadRequest:
    """The 413 for a body over `limit` bytes: the HTTP edge's and a batch line's."""
    return BadRequest(413, f"the request body is over the server's limit of {limit} bytes "
                      "(limits.max_body_bytes)", None, code="request_too_large")


def check_body_size(body: dict[str, Any], limit: int) -> None:
    """A body that arrives parsed (a batch line's): its size is that of its compact UTF-8
    JSON, the fewest bytes any client can send it in, so a body refused here is refused
    over HTTP too."""
    size = len(json.dumps(body, ensure_ascii=False, separators=(",", ":"))
               .encode("utf-8", "surrogatepass"))
    if size > limit:
        raise too_large(limit)


async def _too_large(send: Send, limit: int) -> None:
    err = too_large(limit)
    payload = json.dumps(error_body(err.message, err.type, err.param, err.code)).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}.{i}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k))


def check_text(body: _Common) -> None:
    """Every string of the body must be encodable Unicode (no lone surrogates)."""
    for path, text in _strings(body.model_dump(exclude_none=True), ""):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            bad = text[err.start:err.end].encode("unicode_escape").decode()
            raise BadRequest(400, f"{path}: not valid Unicode text (a lone surrogate {bad} "
                                  f"at character {err.start})", path) from None


def _common(body: _Common, limits: Any) -> None:
    check_text(body)
    if body.n > limits.max_n:
        raise BadRequest(400, f"n: {body.n}, this server allows at most {limits.max_n}", "n")
    stops = body.stop or []
    if len(stops) > limits.max_stop:
        raise BadRequest(400, f"stop: {len(stops)} stop strings, this server allows at most "
                              f"{limits.max_stop}", "stop")
    if any(len(s) > limits.max_stop_chars for s in stops):
        raise BadRequest(400, f"stop: a stop string is over {limits.max_stop_chars} "
                              "characters", "stop")


def check_completion(body: CompletionRequest, limits: Any) -> None:
    _common(body, limits)
    prompts = body.prompts()
    if len(prompts) > limits.max_prompts:
        raise BadRequest(400, f"prompt: {len(prompts)} prompts, this server allows at most "
                              f"{limits.max_prompts} per request", "prompt")
    longest = max(len(p) for p in prompts)
    if longest > limits.max_prompt_chars:
        raise BadRequest(400, f"prompt: {longest} characters or token ids, this server allows "
                              f"at most {limits.max_prompt_chars}", "prompt")


def check_chat(body: ChatCompletionRequest, limits: Any) -> None:
    _common(body, limits)
    if len(body.messages) > limits.max_messages:
        raise BadRequest(400, f"messages: {len(body.messages)} messages, this server allows "
                              f"at most {limits.max_messages}", "messages")
    total = sum(len(m.text) for m in body.messages)
    if total > limits.max_prompt_chars:
        raise BadRequest(400, f"messages: {total} characters in all, this server allows at "
                              f"most {limits.max_prompt_chars}", "messages")
