"""The replica's channel back to Serve's proxy, opened only where a request needs it.

For every HTTP request, Ray Serve's replica opens a channel back to the proxy: it looks the
proxy actor up (`ray.get_actor`, a blocking request to Ray's GCS on the replica's event
loop) and calls it (`receive_asgi_messages`, a Ray actor call that the proxy answers with
the body, then with the client's disconnect). When the body already rode with the request
(cluster/inline_body.py) the call carries nothing the replica needs: a client that goes away
reaches the replica anyway, as the proxy's cancellation of the request, which cancels the
app (and the job is aborted there). Traced at C = 64 on the 2-core box, a burst of new
requests enters the replica one at a time, 5-10 ms apart, and the channel was the largest
part of each one's own cost there (BENCHMARKS.md > Serving, eighth session).

`install()` (in each replica that serves HTTP) changes Serve's
`StreamingHTTPRequest.receive_asgi_messages`:
- a request whose body was carried gets no call at all: its receive channel waits until the
  app has ended (InlineBody calls `ended(scope)`), then says "disconnect", so Serve's task
  that reads it always ends;
- any other request (a large or chunked body) calls the proxy as before, with the proxy's
  handle looked up once per proxy name; a call that fails because the proxy died drops the
  handle, so the next request looks it up again.
ENV=0 in a replica's environment leaves Serve's own channel (`tandem bench serve --variants
single single-serve-receive` measures the two side by side). Keep the module light at
import: the proxy imports inline_body, which imports this.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Awaitable, Callable
from typing import Any

from cluster import env_switch

ENV = "TANDEM_PROXY_RECEIVE"
ENDED = "tandem.app_ended"  # scope key: True, or the future a waiting channel resolves
_DISCONNECT = pickle.dumps([{"type": "http.disconnect"}])

_handles: dict[str, Any] = {}  # proxy actor name -> its ActorHandle
_installed = False

Channel = Callable[[Any], Awaitable[bytes]]


def enabled() -> bool:
    """Whether this replica skips Serve's channel for a carried body (ENV)."""
    return env_switch.is_on(ENV)


def ended(scope: dict[str, Any]) -> None:
    """The app has ended (InlineBody's finally): a channel waiting on it says disconnect."""
    waiting = scope.get(ENDED)
    scope[ENDED] = True
    if isinstance(waiting, asyncio.Future):
        loop = waiting.get_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, waiting)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def until_ended(scope: dict[str, Any]) -> Channel:
    """A channel for a request whose body was carried: nothing to fetch, ends with the app."""
    async def receive(request_metadata: Any) -> bytes:
        if scope.get(ENDED) is not True:
            future = asyncio.get_running_loop().create_future()
            scope[ENDED] = future
            await future
        return _DISCONNECT
    return receive


def proxy_handle(name: str) -> Any:
    """The proxy actor's handle, looked up once per name."""
    handle = _handles.get(name)
    if handle is None:
        import ray
        from ray.serve._private.constants import SERVE_NAMESPACE

        handle = _handles[name] = ray.get_actor(name, namespace=SERVE_NAMESPACE)
    return handle


def call_proxy(name: str) -> Channel:
    """handle.receive_asgi_messages.remote, dropping the cached handle if the proxy died."""
    from ray.exceptions import RayActorError

    handle = proxy_handle(name)
    remote = handle.receive_asgi_messages.remote

    async def receive(request_metadata: Any) -> bytes:
        try:
            return await remote(request_metadata)
        except RayActorError:
            if _handles.get(name) is handle:
                del _handles[name]
            raise
    return receive


def install() -> bool:
    """Patch Serve's StreamingHTTPRequest in this process (once); False if ENV says no."""
    global _installed
    if _installed or not enabled():
        return _installed
    from ray.serve._private.common import StreamingHTTPRequest

    from cluster import inline_body

    def receive_asgi_messages(self: Any) -> Channel:
        if self._receive_asgi_messages is None:
            scope = self._asgi_scope
            if inline_body.enabled() and inline_body.carried(scope) is not None:
                self._receive_asgi_messages = until_ended(scope)
            else:
                self._receive_asgi_messages = call_proxy(self._proxy_actor_name)
        return self._receive_asgi_messages

    StreamingHTTPRequest.receive_asgi_messages = property(  # type: ignore[method-assign]
        receive_asgi_messages)
    _installed = True
    return True
