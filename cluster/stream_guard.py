"""The last word on a stream whose writer died, said by the one process that outlives it:
Ray Serve's HTTP proxy.

When the replica writing a response dies (SIGKILL, its node lost, the ingress replica of the
split layout killed) or raises mid-stream, Serve's proxy stops forwarding and returns, and the
HTTP server cuts the connection: the client sees a protocol error (httpx RemoteProtocolError,
"peer closed connection without sending complete message body"), not an answer. Nothing in
the dead replica can help. So this ASGI middleware runs inside the proxy (Serve's
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` hook) around every request whose path has /v1/
(under any route prefix) and, when the app underneath ends without finishing the response:
- a stream that had started (text/event-stream) gets an error event in OpenAI's shape and
  `data: [DONE]`, so the client's SSE reader (the `openai` client raises APIError) ends
  cleanly;
- a request answered with nothing at all yet is sent again (the body is replayed; Serve
  routes it to a live replica, or waits for one to start), up to MAX_RESENDS times, then
  gets a 503 in OpenAI's shape;
- a client that went away is left alone.
It also reads every request's body (up to cluster/inline_body.py's MAX_INLINE_BYTES) before
handing the request on, and carries it with the request, so that the replica need not fetch
it back from the proxy with a Ray call.

Install it where Ray starts (the proxy reads the variable once, at its own start):
`controller_options()` for serve.start / a YAML's top-level `controller_options:` (the proxy
inherits the controller's environment), or the variable itself in the environment of
`ray start` / `ray.init`. Keep this module light: the proxy imports it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster import cpu_placement, inline_body

if TYPE_CHECKING:  # not at run time: the proxy imports this module, and config pulls torch
    from cluster.config import TandemConfig

log = logging.getLogger("ray.serve")

ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "cluster.stream_guard:proxy_middlewares"
# Serve's controller calls this at its start: it keeps off the engine core's CPUs too.
CONTROLLER_ENV = "RAY_SERVE_CONTROLLER_CALLBACK_IMPORT_PATH"
CONTROLLER_CALLBACK = "cluster.cpu_placement:proxy_keep_off"
MAX_RESENDS = 2
RESEND_PAUSE_S = 0.5  # times the attempt number: Serve needs a moment to see a replica die
LOST = ("the server process writing this response was lost (replica or node failure)")


def proxy_middlewares() -> list[Middleware]:
    """What Serve's proxy calls at start (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH); it
    also keeps the proxy off the engine cores' CPUs if its environment names them."""
    cpu_placement.proxy_keep_off()
    return [Middleware(StreamGuard)]


# What else the proxy's environment carries: requests and streamed chunks go from the proxy
# to replicas over Serve's gRPC channel instead of Ray actor calls (about 25 % less proxy and
# replica CPU per streamed token, `tandem bench serve --serve-env RAY_SERVE_PROXY_USE_GRPC=1`,
# BENCHMARKS.md > Serving). The YAMLs' controller_options say the same.
PROXY_ENV = {"RAY_SERVE_PROXY_USE_GRPC": "1"}


def controller_options(config: TandemConfig | None = None) -> dict[str, Any]:
    """serve.start(controller_options=...): the proxy, started by the controller, inherits
    its environment and with it this guard (and PROXY_ENV); and where the app's engine core
    has CPUs of its own, the proxy and the controller keep off them (cluster/cpu_placement.py;
    "auto" is resolved in each process, which knows no torch_threads: for a 1-thread core)."""
    env = {ENV: CALLBACK, **PROXY_ENV}
    cpus = config.model.engine_core_cpus if config is not None else None
    if isinstance(cpus, list) or (cpus == "auto" and (config.model.torch_threads or 1) == 1):
        env[cpu_placement.PROXY_ENV] = "auto" if cpus == "auto" else ",".join(map(str, cpus))
        env[CONTROLLER_ENV] = CONTROLLER_CALLBACK
    return {"runtime_env": {"env_vars": env}}


def error_event(message: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": "server_error", "param": None,
                      "code": code}}
    return f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n".encode()


class Exchange:
    """What one attempt sent, and the request body as received (for a resend)."""

    def __init__(self, receive: Receive) -> None:
        self.receive, self.body = receive, []
        self.disconnected = False

    async def recorded(self) -> Message:
        msg = await self.receive()
        if msg["type"] == "http.request":
            self.body.append(msg)
        elif msg["type"] == "http.disconnect":
            self.disconnected = True
        return msg

    async def read_whole(self) -> bytes | None:
        """Receive the body to its end; None if the client went away first."""
        while True:
            msg = await self.recorded()
            if msg["type"] != "http.request":
                return None
            if not msg.get("more_body", False):
                return b"".join(m.get("body", b"") for m in self.body)

    def replay(self) -> Receive:
        pending = list(self.body)

        async def receive() -> Message:
            return pending.pop(0) if pending else await self.recorded()
        return receive


class Attempt:
    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = self.finished = self.is_stream = False
        self.num_bytes = 0

    async def send(self, msg: Message) -> None:
        if msg["type"] == "http.response.start":
            self.started = True
            headers = dict(msg.get("headers") or [])
            self.is_stream = headers.get(b"content-type", b"").startswith(b"text/event-stream")
        elif msg["type"] == "http.response.body":
            self.num_bytes += len(msg.get("body", b""))
            self.finished = not msg.get("more_body", False)
        await self._send(msg)


def _inlinable(scope: Scope) -> bool:
    """A body of a declared size the replica may get with the request (no Content-Length
    and no Transfer-Encoding: no body at all, as a GET has)."""
    headers = dict(scope.get("headers") or [])
    if b"transfer-encoding" in headers:
        return False
    declared = headers.get(b"content-length", b"0")
    return declared.isdigit() and int(declared) <= inline_body.MAX_INLINE_BYTES


class StreamGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(receive)
        if _inlinable(scope):
            body = await exchange.read_whole()
            if body is None:  # the client went away while sending it
                return
            inline_body.attach(scope, body)
        if "/v1/" not in scope.get("path", ""):
            await self.app(scope, exchange.replay(), send)
            return
        for resend in range(MAX_RESENDS + 1):
            attempt = Attempt(send)
            await self._run(scope, exchange.replay(), attempt)
            if attempt.finished or exchange.disconnected:
                return
            if attempt.started:
                await self._end(attempt, scope)
                return
            if resend < MAX_RESENDS:
                log.warning("stream guard: %s %s got no answer; sending it again",
                            scope.get("method"), scope.get("path"))
                await asyncio.sleep(RESEND_PAUSE_S * (resend + 1))
        body = json.dumps({"error": {"message": f"{LOST}; the request can be retried",
                                     "type": "server_error", "param": None,
                                     "code": "replica_lost"}}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _run(self, scope: Scope, receive: Receive, attempt: Attempt) -> None:
        try:
            await self.app(scope, receive, attempt.send)
        except Exception:  # the error boundary of the proxy: logged, answered below
            log.exception("stream guard: %s %s failed after %d bytes", scope.get("method"),
                          scope.get("path"), attempt.num_bytes)

    async def _end(self, attempt: Attempt, scope: Scope) -> None:
        """A response cut after its start: a stream ends with an error event and [DONE];
        anything else cannot be mended and is left to the server to close."""
        log.warning("stream guard: %s cut after %d bytes%s", scope.get("path"),
                    attempt.num_bytes, "; ending it with an error event"
                    if attempt.is_stream else "")
        if attempt.is_stream:
            await attempt.send({"type": "http.response.body", "more_body": False,
                                "body": error_event(f"{LOST} after part of the stream was "
                                                    "sent", "stream_lost")})
