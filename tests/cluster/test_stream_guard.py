"""cluster/stream_guard.py, the proxy's last word on a response whose writer died, under the
real `openai` client (over httpx's ASGI transport, no Ray): a stream cut mid-way ends with an
error event the client raises as APIError; a request that got nothing is sent again with its
body; a client that went away is left alone. Inside Serve's proxy with a replica SIGKILLed
mid-stream: tests/cluster/test_faults.py."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from cluster.stream_guard import StreamGuard, proxy_middlewares
from tests.cluster.conftest import read_body

SSE = [(b"content-type", b"text/event-stream")]


def chunk(text: str) -> bytes:
    body = {"id": "c1", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}]}
    return f"data: {json.dumps(body)}\n\n".encode()


class DyingApp:
    """Streams `before` chunks, then dies the way Serve's proxy does when the replica under
    it is lost: it returns (or raises) without finishing the response. `fail_first`
    attempts die before sending anything."""

    def __init__(self, before: int = 2, raises: bool = False, fail_first: int = 0) -> None:
        self.before, self.raises, self.fail_first = before, raises, fail_first
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        body = await read_body(receive)
        self.bodies.append(body)
        if len(self.bodies) <= self.fail_first:
            return  # nothing sent: the replica was lost before it answered
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        for i in range(self.before):
            await send({"type": "http.response.body", "body": chunk(f"t{i}"),
                        "more_body": True})
        if self.before >= 99:  # a healthy stream
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n",
                        "more_body": False})
            return
        if self.raises:
            raise RuntimeError("ActorDiedError")


def client(app) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=StreamGuard(app)),
                             base_url="http://proxy")
    return openai.AsyncOpenAI(base_url="http://proxy/v1", api_key="x", http_client=http,
                              max_retries=0)


async def stream_texts(app) -> tuple[list[str], BaseException | None]:
    texts: list[str] = []
    try:
        stream = await client(app).completions.create(model="m", prompt="hi", stream=True)
        async for c in stream:
            texts.append(c.choices[0].text)
    except openai.APIError as err:
        return texts, err
    return texts, None


@pytest.mark.parametrize("raises", [False, True])
def test_a_stream_cut_mid_way_ends_with_an_error_the_openai_client_raises(raises) -> None:
    texts, err = asyncio.run(stream_texts(DyingApp(before=2, raises=raises)))
    assert texts == ["t0", "t1"]  # what was streamed arrived, then the error
    assert isinstance(err, openai.APIError) and "was lost" in err.message
    assert err.body["code"] == "stream_lost" and err.body["type"] == "server_error"


def test_raw_sse_ends_with_done_after_the_error_event() -> None:
    async def go() -> str:
        transport = httpx.ASGITransport(app=StreamGuard(DyingApp(before=1)))
        async with httpx.AsyncClient(transport=transport) as c:
            r = await c.post("http://proxy/v1/completions", json={"stream": True})
            return r.text
    events = [e for e in asyncio.run(go()).split("\n\n") if e]
    assert json.loads(events[1][6:])["error"]["code"] == "stream_lost"
    assert events[-1] == "data: [DONE]"


def test_nothing_sent_yet_is_sent_again_with_its_body() -> None:
    app = DyingApp(before=99, fail_first=2)
    texts, err = asyncio.run(stream_texts(app))
    assert err is None and len(texts) == 99
    assert len(app.bodies) == 3 and len(set(app.bodies)) == 1  # the same body each time
    assert json.loads(app.bodies[0])["prompt"] == "hi"


def test_still_nothing_after_the_resends_is_a_503_in_openais_shape() -> None:
    app = DyingApp(before=99, fail_first=5)
    texts, err = asyncio.run(stream_texts(app))
    assert isinstance(err, openai.InternalServerError) and err.status_code == 503
    assert err.body["code"] == "replica_lost" and len(app.bodies) == 3


def test_healthy_streams_and_other_paths_pass_untouched() -> None:
    texts, err = asyncio.run(stream_texts(DyingApp(before=99)))
    assert err is None and len(texts) == 99

    async def health() -> httpx.Response:
        transport = httpx.ASGITransport(app=StreamGuard(DyingApp(before=1)))
        async with httpx.AsyncClient(transport=transport) as c:
            return await c.get("http://proxy/health")
    with pytest.raises(AssertionError):  # not /v1/: left cut (httpx's check that it ended)
        asyncio.run(health())
    assert [m.cls for m in proxy_middlewares()] == [StreamGuard]


def test_every_serving_yaml_gives_the_proxy_the_same_environment() -> None:
    """The YAMLs' controller_options say what controller_options(their app's config) says
    (tandem serve, tests, benches), so `serve run` gets the same proxy as `tandem serve`."""
    from pathlib import Path

    import yaml

    from cluster.config import load_config
    from cluster.stream_guard import controller_options

    configs = sorted((Path(__file__).parents[2] / "ray_configs").glob("*.yaml"))
    served = [yaml.safe_load(c.read_text()) for c in configs]
    served = [(c, y) for c, y in zip(configs, served, strict=True) if "controller_options" in y]
    assert len(served) >= 6
    for path, doc in served:
        config = load_config(doc["applications"][0].get("args"))
        assert doc["controller_options"] == controller_options(config), path.name


def test_the_proxy_is_told_the_cpus_of_an_engine_core_that_has_its_own() -> None:
    from cluster.config import load_config
    from cluster.cpu_placement import PROXY_ENV
    from cluster.stream_guard import controller_options

    env = controller_options(load_config({"model": {"engine_core_cpus": [1, 3]}}))
    assert env["runtime_env"]["env_vars"][PROXY_ENV] == "1,3"
    assert PROXY_ENV not in controller_options(load_config({}))["runtime_env"]["env_vars"]
    auto = load_config({"model": {"engine_core_cpus": "auto"}})  # resolved in each process
    assert controller_options(auto)["runtime_env"]["env_vars"][PROXY_ENV] == "auto"
    wide = load_config({"model": {"engine_core_cpus": "auto", "torch_threads": 2}})
    assert PROXY_ENV not in controller_options(wide)["runtime_env"]["env_vars"]
