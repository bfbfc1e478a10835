"""A request's body carried to the replica with the request, not fetched back from the proxy.

Ray Serve's proxy sends a replica only the request's ASGI scope; the replica's app then asks
for the body with a Ray call back to the proxy (Serve's ASGIReceiveProxy: a lookup of the
proxy actor and a `receive_asgi_messages` call), a second cross-process hop before the
request can even be parsed (13-87 ms p50 at C = 64 on this 2-core box, BENCHMARKS.md >
Serving, fourth session). A body the proxy has already fully received can ride in the scope
instead, which Serve pickles and sends anyway:
- in the proxy, `cluster/stream_guard.py` reads the body (at most MAX_INLINE_BYTES) before
  handing the request on and puts it under `scope["extensions"][KEY]`;
- in the replica, `InlineBody` (the outermost middleware of the app) answers the app's first
  `receive()` with it. Serve's own fetch back to the proxy is then not made at all
  (cluster/proxy_receive.py; a client's disconnect reaches the replica as the proxy's
  cancellation of the request); where it is (proxy_receive's ENV=0), the body it returns
  again is dropped and the disconnect passes, so aborts work either way.

A larger body, one still arriving, or a request Serve's proxy got without the guard goes the
usual way. Keep this module light: the proxy imports it.

ENV=0 in a replica's environment turns the replica side off (the body is then fetched back
as before even when it was carried): `tandem bench serve --variants single single-fetch`
measures the two side by side.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster import env_switch, proxy_receive

KEY = "tandem.body"
ENV = "TANDEM_INLINE_BODY"
# Under the replica's own max_body_bytes default (4 MiB) and gRPC's default message size.
MAX_INLINE_BYTES = 1 << 20


def attach(scope: Scope, body: bytes) -> None:
    """Proxy side: carry a fully received body with the request."""
    if len(body) > MAX_INLINE_BYTES:
        raise ValueError(f"inline_body.attach: {len(body)} bytes is over {MAX_INLINE_BYTES}")
    scope.setdefault("extensions", {})[KEY] = body


def enabled() -> bool:
    """Whether this replica reads carried bodies (ENV: "1", the default, or "0")."""
    return env_switch.is_on(ENV)


def carried(scope: Scope) -> bytes | None:
    """The body the request carries, if the proxy attached one."""
    ext = scope.get("extensions") or {}
    body = ext.get(KEY)
    return body if isinstance(body, bytes) else None


class InlineBody:
    """Replica side (ASGI middleware): the first receive() is the carried body; after it,
    the app's receive() passes on everything but the body again (the disconnect above all)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = carried(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, _receive_after(body, receive), send)
        finally:  # the replica's channel back to the proxy, if it waits, may end now
            proxy_receive.ended(scope)


def _receive_after(body: bytes, receive: Receive) -> Receive:
    given = False

    async def inner() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the body again, by Serve's own fetch: drop it
                return msg
    return inner
