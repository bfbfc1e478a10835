"""Serving tests: start a Serve app once per module, on a free port, and tear it down."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml

from actors.free_port import free_port
from bench import deploy
from cluster import stream_guard
from cluster.config import TandemConfig
from engine.engine import LLMEngine
from engine.executor import ModelExecutor
from engine.params import DecodeParams, Mode, SamplingParams

CONFIGS = Path(__file__).resolve().parents[2] / "ray_configs"


def yaml_app(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((CONFIGS / name).read_text())
    return doc["applications"][0]


@contextmanager
def serving(app: Any, name: str, route_prefix: str, port: int | None = None) -> Iterator[str]:
    """serve.start on a free port (actors/free_port.py: one no Ray process can be handed
    meanwhile) and serve.run `app`; yields the base URL. Needs the ray_session fixture.
    Serve must not be running already (serve.start would join it, on its port). On the way
    out Serve is shut down even when serve.start failed, and gone before the next test."""
    from ray import serve

    left = deploy.serve_actors()
    assert not left, f"Serve already running in this Ray (an earlier test's?): {left}"
    port = free_port() if port is None else port
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port},
                    controller_options=stream_guard.controller_options())
        serve.run(app, name=name, route_prefix=route_prefix)
        yield f"http://127.0.0.1:{port}"
    finally:
        deploy.shutdown_serve()


@contextmanager
def running_app(config: TandemConfig, name: str) -> Iterator[str]:
    """The tandem app of `config`, served at / (see serving)."""
    from cluster.app import make_app

    with serving(make_app(config), name, "/") as url:
        yield url


@contextmanager
def running_probe(app: Any, route_prefix: str) -> Iterator[str]:
    """Any bound app behind the proxy tandem serves with (the stream guard), as "probe"."""
    with serving(app, "probe", route_prefix) as url:
        yield url


def metric_values(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (name, sorted labels without replica)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "replica"))
            out[(s.name, labels)] = out.get((s.name, labels), 0.0) + s.value
    return out


def total(values: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in values.items() if n == name and want <= set(ls))


def assert_serves_ar_text(base_url: str, model, codec, prompt: str, modes: tuple[str, ...]) -> None:
    """Greedy completions over HTTP in each mode, and one stream, equal an in-process AR engine's
    text; afterwards every KV block of the server is free again."""
    engine = LLMEngine(ModelExecutor(model, 64, 16), model.config, codec)
    want = engine.generate([prompt], SamplingParams(max_tokens=12, temperature=0),
                           DecodeParams(mode=Mode.AR))[0].text
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0,
                           timeout=120)
    for mode in modes:
        r = client.completions.create(model="tandem-tiny", prompt=prompt, max_tokens=12,
                                      temperature=0, extra_body={"mode": mode})
        assert r.choices[0].text == want, mode
    stream = client.completions.create(model="tandem-tiny", prompt=prompt, max_tokens=12,
                                       temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == want
    health = httpx.get(f"{base_url}/health").json()
    assert health["kv_free_blocks"] == health["kv_blocks"]


async def read_body(receive) -> bytes:  # noqa: ANN001
    """An ASGI app's whole request body, message by message (for test apps)."""
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body
