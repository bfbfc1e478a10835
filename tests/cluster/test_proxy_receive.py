"""cluster/proxy_receive.py: a request whose body was carried opens no channel back to Serve's
proxy (it ends with the app); any other looks the proxy up once per proxy name, and again
after the proxy died. No Ray session: the lookup is replaced by a counter. (Through Serve's
real proxy and replica: test_server.py's disconnect test and test_inline_body.py.)"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
from ray.exceptions import ActorDiedError
from ray.serve._private.common import StreamingHTTPRequest

from cluster import inline_body, proxy_receive


class FakeProxy:
    def __init__(self) -> None:
        self.dead = False
        self.receive_asgi_messages = self  # handle.receive_asgi_messages.remote(...)

    async def remote(self, metadata: Any) -> bytes:
        if self.dead:
            raise ActorDiedError()
        return b"messages for " + metadata.encode()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[FakeProxy]:
    """Serve's property restored afterwards; each ray.get_actor makes a new FakeProxy."""
    made: list[FakeProxy] = []

    def get_actor(name: str, namespace: str | None = None) -> FakeProxy:
        made.append(FakeProxy())
        return made[-1]

    monkeypatch.setattr("ray.get_actor", get_actor)
    monkeypatch.setattr(StreamingHTTPRequest, "receive_asgi_messages",
                        StreamingHTTPRequest.receive_asgi_messages)
    monkeypatch.setattr(proxy_receive, "_installed", False)
    monkeypatch.setattr(proxy_receive, "_handles", {})
    monkeypatch.delenv(proxy_receive.ENV, raising=False)
    monkeypatch.delenv(inline_body.ENV, raising=False)
    assert proxy_receive.install()
    return made


def channel(proxy_name: str, scope: dict[str, Any] | None = None) -> Any:
    return StreamingHTTPRequest(scope or {"type": "http"}, proxy_actor_name=proxy_name) \
        .receive_asgi_messages


def test_one_lookup_per_proxy_name(lookups: list[FakeProxy]) -> None:
    for _ in range(3):
        assert asyncio.run(channel("proxy-a")("m")) == b"messages for m"
    channel("proxy-b")
    assert len(lookups) == 2


def test_a_dead_proxy_is_looked_up_again(lookups: list[FakeProxy]) -> None:
    first = channel("proxy-a")
    lookups[0].dead = True
    with pytest.raises(ActorDiedError):  # this request's disconnect watch ends, as before
        asyncio.run(first("m"))
    assert asyncio.run(channel("proxy-a")("m")) == b"messages for m"
    assert len(lookups) == 2


def test_a_carried_body_calls_no_proxy_and_ends_with_the_app(
        lookups: list[FakeProxy]) -> None:
    scope: dict[str, Any] = {"type": "http"}
    inline_body.attach(scope, b"{}")

    async def app_ends_later() -> bytes:
        waiting = asyncio.create_task(channel("proxy-a", scope)("m"))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # nothing to read while the app runs
        proxy_receive.ended(scope)  # InlineBody's finally
        return await asyncio.wait_for(waiting, 1)

    assert pickle.loads(asyncio.run(app_ends_later())) == [{"type": "http.disconnect"}]
    assert lookups == []
    # an app that ended before Serve's reader first asked: the reader ends at once
    assert asyncio.run(channel("proxy-a", scope)("m")) == pickle.dumps(
        [{"type": "http.disconnect"}])


def test_env_off_leaves_serve_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_receive, "_installed", False)
    monkeypatch.setenv(proxy_receive.ENV, "0")
    before = StreamingHTTPRequest.receive_asgi_messages
    assert not proxy_receive.install()
    assert StreamingHTTPRequest.receive_asgi_messages is before
    monkeypatch.setenv(proxy_receive.ENV, "2")
    with pytest.raises(ValueError):
        proxy_receive.enabled()
