"""The OpenAI server for real: ray_configs/local.yaml (plus an API key) under Ray Serve,
driven with the openai client. One Serve start for the whole module."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from cluster.config import load_config
from engine.engine import LLMEngine
from engine.executor import ModelExecutor
from engine.params import DecodeParams, Mode, SamplingParams
from models.chat_template import ChatTemplate
from models.checkpoint import DEFAULT_MODEL_DIR
from tests.cluster.conftest import metric_values, running_app, total, yaml_app

pytestmark = pytest.mark.slow

KEY = "test-key"
PROMPT = "def parse_args("
PROMPTS = ["def parse_args(", "import os\n", "class Stack:\n", "for i in range(",
           "    return self.", "def __init__(self", "with open(", "if __name__ =="]


@pytest.fixture(scope="module")
def base_url(ray_session) -> str:
    app = yaml_app("local.yaml")
    config = load_config({**app["args"], "api_keys": [KEY]})
    with running_app(config, app["name"]) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def ref_engine(tiny_model, codec) -> LLMEngine:
    """An in-process engine on the same weights: what 'solo' means."""
    return LLMEngine(ModelExecutor(tiny_model, 256, 16), tiny_model.config, codec)


def solo(engine: LLMEngine, prompt: str, seed: int, max_tokens: int = 16,
         temperature: float = 0.0) -> str:
    sp = SamplingParams(max_tokens=max_tokens, seed=seed, temperature=temperature)
    return engine.generate([prompt], sp, DecodeParams(mode=Mode.AR))[0].text


def test_models_and_health(client: openai.OpenAI, base_url: str) -> None:
    assert [m.id for m in client.models.list().data] == ["tandem-tiny"]
    health = httpx.get(f"{base_url}/health").json()
    assert health["status"] == "ok" and health["kv_free_blocks"] == health["kv_blocks"]


def test_greedy_completion_equals_tandem_generate(client: openai.OpenAI, codec, capsys) -> None:
    from cluster import generate_cmd

    generate_cmd.main(["--json", "--mode", "ar", "--max-tokens", "16", "--seed", "5", PROMPT])
    want = json.loads(capsys.readouterr().out)
    for mode in ("ar", "auto"):
        r = client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=16,
                                      temperature=0, seed=5, extra_body={"mode": mode})
        assert r.choices[0].text == want["text"], mode
        assert r.usage.prompt_tokens == len(codec.encode(PROMPT))
        assert r.usage.completion_tokens == want["num_tokens"] == 16
        assert r.usage.total_tokens == r.usage.prompt_tokens + 16
        tandem = r.model_extra["tandem"]
        assert tandem["seed"] == 5 and sum(tandem["modes"].values()) > 0
        assert tandem["tokens_per_forward"] > 0


def test_streamed_completion_matches_and_ends_with_usage(client: openai.OpenAI) -> None:
    kw = dict(model="tandem-tiny", prompt=PROMPT, max_tokens=12, temperature=0.8, seed=9)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(**kw, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) <= {None}


def test_chat_completion_and_stream(client: openai.OpenAI, codec, ref_engine) -> None:
    messages = [{"role": "system", "content": "Write Python."},
                {"role": "user", "content": "Parse the command line."}]
    template = ChatTemplate.load(DEFAULT_MODEL_DIR)
    prompt = template.render(messages)
    r = client.chat.completions.create(model="tandem-tiny", messages=messages, max_tokens=10,
                                       temperature=0, seed=1)
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(codec.encode(prompt, add_special_tokens=False))
    sp = SamplingParams(max_tokens=10, temperature=0, stop=template.stop)
    assert r.choices[0].message.content == ref_engine.generate([prompt], sp)[0].text
    stream = client.chat.completions.create(model="tandem-tiny", messages=messages,
                                            max_tokens=10, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_logprobs_n_and_stop(client: openai.OpenAI) -> None:
    r = client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=8,
                                  temperature=0, logprobs=1)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == r.usage.completion_tokens
    assert all(x <= 0 for x in lp.token_logprobs) and len(lp.top_logprobs[0]) >= 1
    c = client.chat.completions.create(model="tandem-tiny", max_tokens=4, temperature=0,
                                       messages=[{"role": "user", "content": "hi"}],
                                       logprobs=True, top_logprobs=1)
    assert len(c.choices[0].logprobs.content) == c.usage.completion_tokens
    assert len(c.choices[0].logprobs.content[0].top_logprobs) == 1
    n = client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=6, n=2,
                                  temperature=1.0, seed=40)
    assert sorted(ch.index for ch in n.choices) == [0, 1]
    assert n.model_extra["tandem"]["seeds"] == [40, 41]
    stopped = client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=16,
                                        temperature=0, stop=["Parse"])
    assert "Parse" not in stopped.choices[0].text
    assert stopped.choices[0].finish_reason == "stop"


def test_32_concurrent_streams_print_their_solo_text_then_free_kv(
        base_url: str, ref_engine: LLMEngine) -> None:
    jobs = [(PROMPTS[i % 8], 100 + i % 8) for i in range(32)]
    want = {(p, s): solo(ref_engine, p, s, 16, 0.8) for p, s in set(jobs)}

    async def one(aclient: openai.AsyncOpenAI, prompt: str, seed: int) -> str:
        stream = await aclient.completions.create(
            model="tandem-tiny", prompt=prompt, max_tokens=16, temperature=0.8, seed=seed,
            stream=True)
        return "".join([c.choices[0].text async for c in stream if c.choices])

    async def run() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0,
                                     timeout=120)
        return await asyncio.gather(*(one(aclient, p, s) for p, s in jobs))

    texts = asyncio.run(run())
    assert texts == [want[j] for j in jobs]
    health = httpx.get(f"{base_url}/health").json()
    assert health["kv_free_blocks"] == health["kv_blocks"]
    assert health["num_running"] == health["num_waiting"] == 0
    # live TTFT / queue sums for `tandem bench serve`, read from the replica's histograms
    assert health["num_first_tokens"] >= len(jobs) and health["ttft_total_s"] > 0
    assert health["num_queued"] >= len(jobs)


def test_client_disconnect_aborts_and_frees_kv(base_url: str) -> None:
    before = metric_values(base_url)
    body = {"prompt": PROMPT, "max_tokens": 400, "temperature": 0, "stream": True,
            "mode": "ar", "ignore_eos": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, headers=headers,
                      timeout=60) as resp:
        lines = 0
        for line in resp.iter_lines():
            lines += line.startswith("data: ")
            if lines >= 3:
                break
    assert lines == 3
    health = {}
    for _ in range(100):
        health = httpx.get(f"{base_url}/health").json()
        if health["num_running"] == 0 and health["kv_free_blocks"] == health["kv_blocks"]:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert health["num_running"] == 0 and health["kv_free_blocks"] == health["kv_blocks"]
    after = metric_values(base_url)
    assert (total(after, "tandem_requests_aborted_total")
            == total(before, "tandem_requests_aborted_total") + 1)


LONG = "x = 1\n" * 1500  # > 2048 tokens
BAD = [
    # (path, body (dict, or raw bytes), status, param)
    ("/v1/completions", b'{"prompt": "x", ', 400, None),
    ("/v1/completions", b"[1, 2]", 400, None),
    ("/v1/completions", {"prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": 5}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "temprature": 0.5}, 400, "temprature"),
    ("/v1/completions", {"prompt": "x", "mode": "turbo"}, 400, "mode"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 5000}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": LONG, "max_tokens": 4}, 400, "prompt"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"prompt": [999999]}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "slo": {"ttft_ms": -1}}, 400, "slo.ttft_ms"),
    ("/v1/completions", {"prompt": "x", "slo": {"deadline_ms": 1e15}}, 400, "slo.deadline_ms"),
    ("/v1/completions", {"prompt": "x", "block_length": 500}, 400, "block_length"),
    ("/v1/completions", {"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "bot", "content": "x"}]}, 400,
     "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONG}]}, 400,
     "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "model": "nope"}, 404, "model"),
]


@pytest.mark.parametrize("path, body, status, param", BAD)
def test_bad_input_gets_an_openai_error_naming_the_field(
        base_url: str, path: str, body: dict | bytes, status: int, param: str | None) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{base_url}{path}", content=raw, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param
    if param:
        assert param.split(".")[0] in err["message"]


def test_still_serving_after_bad_input_and_auth_is_enforced(
        client: openai.OpenAI, base_url: str) -> None:
    body = {"prompt": PROMPT, "max_tokens": 2}
    assert httpx.post(f"{base_url}/v1/completions", json=body).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    r = httpx.post(f"{base_url}/v1/completions", json=body, headers=wrong)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{base_url}/v1/models").status_code == 401
    assert httpx.get(f"{base_url}/health").status_code == 200  # open, like /metrics
    r = client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=3)
    assert r.usage.completion_tokens == 3


METRICS = ["tandem_time_to_first_token_seconds", "tandem_inter_token_latency_seconds",
           "tandem_e2e_request_latency_seconds", "tandem_request_queue_time_seconds",
           "tandem_num_requests_running", "tandem_num_requests_waiting",
           "tandem_kv_cache_usage_ratio", "tandem_generation_tokens", "tandem_forwards",
           "tandem_accepted_draft_tokens", "tandem_request_mode", "tandem_slo_met",
           "tandem_slo_missed"]


def test_metrics_move_after_requests(client: openai.OpenAI, base_url: str) -> None:
    text = httpx.get(f"{base_url}/metrics").text
    for name in METRICS:
        assert f"# TYPE {name} " in text or f"# TYPE {name}_total counter" in text, name
    before = metric_values(base_url)
    client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=8,
                              extra_body={"mode": "spec_linear",
                                          "slo": {"ttft_ms": 3_600_000}})
    # Infeasible: refused at admission by the SLO policy (429 now, 400 never), or missed.
    try:
        client.completions.create(model="tandem-tiny", prompt=PROMPT, max_tokens=8,
                                  extra_body={"slo": {"deadline_ms": 0.001}})
    except openai.APIStatusError as err:
        assert err.status_code in (400, 429) and "deadline" in err.message
    after = metric_values(base_url)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("tandem_time_to_first_token_seconds_count") == 2 - grew(
        "tandem_requests_rejected_total")
    assert grew("tandem_generation_tokens_total") >= 8
    assert grew("tandem_forwards_total", mode="spec_linear") > 0
    assert grew("tandem_draft_tokens_total", mode="spec_linear") > 0
    assert grew("tandem_request_mode_total", requested="spec_linear", chosen="spec_linear") == 1
    assert grew("tandem_slo_met_total", kind="ttft") == 1
    assert (grew("tandem_slo_missed_total", kind="deadline")
            + grew("tandem_requests_rejected_total")) == 1
    assert grew("tandem_e2e_request_latency_seconds_count") >= 1


def _gaps(base_url: str, max_tokens: int) -> list[float]:
    """Inter-chunk gaps of one greedy AR stream."""
    import time

    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "mode": "ar", "ignore_eos": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    times = []
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, headers=headers,
                      timeout=120) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                times.append(time.perf_counter())
    return [b - a for a, b in zip(times[1:], times[2:], strict=False)]


def _open_stream(base_url: str, max_tokens: int):  # noqa: ANN202 - a socket
    """A raw streaming request whose response nobody reads yet."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(base_url)
    body = json.dumps({"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "mode": "ar", "ignore_eos": True}).encode()
    sock = socket.create_connection((url.hostname, url.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nAuthorization: Bearer " + KEY.encode()
                 + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    sock.recv(1)  # its stream has started
    return sock


def test_a_slow_sse_client_does_not_stall_the_others(base_url: str) -> None:
    """A client that stops reading (its socket buffers fill) must not stall the step loop:
    another stream keeps the inter-token gaps it has beside a client that does read, and
    the stalled one is still generating."""
    import socket
    import statistics
    import threading

    reader = _open_stream(base_url, 1500)
    drain = threading.Thread(target=lambda: [None for _ in iter(lambda: reader.recv(65536),
                                                                 b"")], daemon=True)
    drain.start()
    try:
        beside_reader = statistics.median(_gaps(base_url, 40))
    finally:  # end the drain thread's recv (it reads b"") before the socket goes away
        reader.shutdown(socket.SHUT_RDWR)
        drain.join(timeout=10)
        reader.close()
    slow = _open_stream(base_url, 1500)
    try:
        asyncio.run(asyncio.sleep(2.0))  # let its chunks pile up in the buffers
        beside_slow = statistics.median(_gaps(base_url, 40))
        health = httpx.get(f"{base_url}/health").json()
        assert health["num_running"] == 1  # the slow one, still generating
    finally:
        slow.close()
    assert beside_slow < 1.5 * beside_reader + 0.03, (beside_reader, beside_slow)
    for _ in range(100):
        health = httpx.get(f"{base_url}/health").json()
        if health["num_running"] == 0 and health["kv_free_blocks"] == health["kv_blocks"]:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert health["num_running"] == 0 and health["kv_free_blocks"] == health["kv_blocks"]
