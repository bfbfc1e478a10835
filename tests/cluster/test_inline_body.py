"""cluster/inline_body.py: the proxy's stream guard carries a fully received body with the
request, and the replica's app reads it from there, not with a Ray call back to the proxy.
First with plain ASGI (no Ray), then through Ray Serve's real proxy and replica, where
Serve pickles the scope and runs its own body fetch beside the request."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from cluster import proxy_receive
from cluster.inline_body import MAX_INLINE_BYTES, InlineBody, carried
from cluster.stream_guard import StreamGuard
from tests.cluster.conftest import read_body


class Probe:
    """The app under the guard: what the scope carried, and the body as received."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes | None, bytes]] = []

    async def __call__(self, scope, receive, send) -> None:
        body = await read_body(receive)
        self.seen.append((carried(scope), body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})


def post(app, path: str, content: Any, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as c:
            return await c.post(f"http://proxy{path}", content=content, **kw)
    return asyncio.run(go())


def test_the_guard_carries_a_whole_body_and_still_replays_it() -> None:
    probe = Probe()
    assert post(StreamGuard(probe), "/app/v1/completions", b'{"prompt": "hi"}').text == "ok"
    assert probe.seen == [(b'{"prompt": "hi"}', b'{"prompt": "hi"}')]
    post(StreamGuard(probe), "/health", b"")
    assert probe.seen[-1] == (b"", b"")


def test_a_streamed_or_large_body_goes_the_usual_way() -> None:
    probe = Probe()

    async def chunks():
        yield b"ab"
        yield b"cd"
    post(StreamGuard(probe), "/v1/completions", chunks())  # Transfer-Encoding: chunked
    big = b"x" * (MAX_INLINE_BYTES + 1)
    post(StreamGuard(probe), "/v1/completions", big)
    assert probe.seen == [(None, b"abcd"), (None, big)]


def test_the_replica_reads_the_carried_body_and_drops_it_when_fetched_again() -> None:
    fetched = [{"type": "http.request", "body": b"body", "more_body": False},
               {"type": "http.disconnect"}]

    async def serves_fetch():  # Serve's own fetch: the same body, then the disconnect
        return fetched.pop(0)

    async def go() -> list[dict]:
        got: list[dict] = []

        async def app(scope, receive, send) -> None:
            got.append(await receive())
            got.append(await receive())
        scope = {"type": "http", "extensions": {"tandem.body": b"body"}}
        await InlineBody(app)(scope, serves_fetch, None)
        assert scope[proxy_receive.ENDED] is True  # the replica's channel back may end
        return got
    got = asyncio.run(go())
    assert got == [{"type": "http.request", "body": b"body", "more_body": False},
                   {"type": "http.disconnect"}]
    assert fetched == []


@pytest.mark.usefixtures("ray_session")
def test_through_serves_proxy_and_replica_the_body_rides_with_the_request() -> None:
    from ray import serve
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.cluster.conftest import running_probe

    async def echo(request) -> JSONResponse:
        return JSONResponse({"carried": carried(request.scope) is not None,
                             "body": (await request.body()).decode()})
    api = Starlette(routes=[Route("/v1/echo", echo, methods=["POST"])],
                    middleware=[Middleware(InlineBody)])

    @serve.deployment(max_ongoing_requests=4, ray_actor_options={"num_cpus": 0})
    @serve.ingress(api)
    class Echo:
        pass

    with running_probe(Echo.bind(), "/probe") as url:
        r = httpx.post(f"{url}/probe/v1/echo", content=b'{"a": 1}', timeout=60)
        assert r.json() == {"carried": True, "body": '{"a": 1}'}

        def chunked():
            yield b'{"b": '
            yield b"2}"
        r = httpx.post(f"{url}/probe/v1/echo", content=chunked(), timeout=60)
        assert r.json() == {"carried": False, "body": '{"b": 2}'}


def test_a_client_gone_while_sending_its_body_is_left_alone() -> None:
    msgs = [{"type": "http.request", "body": b'{"pro', "more_body": True},
            {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return msgs.pop(0)

    async def send(msg: dict) -> None:
        sent.append(msg)
    probe = Probe()
    scope = {"type": "http", "method": "POST", "path": "/v1/completions",
             "headers": [(b"content-length", b"20")]}
    asyncio.run(StreamGuard(probe)(scope, receive, send))
    assert probe.seen == [] and sent == [] and carried(scope) is None
