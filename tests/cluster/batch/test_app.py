"""A batch job against a running app (ray_configs/local.yaml under Serve, HTTP on): every
answer equals what the HTTP API answers for the same body (refusals byte for byte, texts of
seeded requests token for token), the app's model name and defaults included."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cluster.batch.adapter import seed_of
from cluster.config import load_config
from tests.cluster.batch.test_job import run_here
from tests.cluster.conftest import running_app, yaml_app

pytestmark = pytest.mark.slow

LOCAL = str(Path(__file__).resolve().parents[3] / "ray_configs" / "local.yaml")
CMPL, CHAT = "/v1/completions", "/v1/chat/completions"
LINES = {  # custom_id -> (url, body)
    "greedy": (CMPL, {"prompt": "def parse_args(", "max_tokens": 8, "temperature": 0,
                      "seed": 3}),
    "sampled-chat": (CHAT, {"messages": [{"role": "user", "content": "Sort a list."}],
                            "max_tokens": 6, "temperature": 0.8, "seed": 5, "mode": "auto"}),
    "unseeded": (CMPL, {"prompt": ["import os\n", "class A:"], "max_tokens": 5,
                        "temperature": 0.8, "n": 2, "mode": "spec_quadratic"}),
    "neg": (CMPL, {"prompt": "x", "max_tokens": -3}),
    "model": (CMPL, {"prompt": "x", "model": "gpt-4"}),
    "extra": (CMPL, {"prompt": "x", "foo": 1}),
    "stops": (CMPL, {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}),
    "best-of": (CMPL, {"prompt": "x", "best_of": 2}),
    "no-messages": (CHAT, {"messages": []}),
    "empty": (CMPL, {"prompt": ""}),
    "top-logprobs": (CHAT, {"messages": [{"role": "user", "content": "x"}],
                            "top_logprobs": 1}),
    "block": (CMPL, {"prompt": "x", "mode": "spec_linear", "block_length": 1}),
    "surrogate": (CMPL, {"prompt": "x\ud800"}),  # cluster/limits.py
    "long-stop": (CMPL, {"prompt": "x", "stop": ["y" * 300]}),
}


@pytest.fixture(scope="module")
def base_url(ray_session) -> str:
    app = yaml_app("local.yaml")
    with running_app(load_config(app["args"]), app["name"]) as url:
        yield url


def test_batch_answers_equal_the_http_api(tmp_path: Path, base_url: str) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"custom_id": cid, "method": "POST", "url": url,
                                       "body": body}) + "\n"
                           for cid, (url, body) in LINES.items()))
    out = tmp_path / "out.jsonl"
    s = run_here("--input", str(inp), "--output", str(out), "--app", "tandem", "--config",
                 LOCAL)
    assert (s["done"], s["refused"], s["failed"]) == (3, len(LINES) - 3, 0)
    results = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    for cid, (url, body) in LINES.items():
        res = results[cid]
        assert res["error"] is None and res["id"].startswith("batch_req_")
        if "seed" not in body:  # the job's seed for it: the API then answers the same
            body = {**body, "seed": seed_of(cid)}
        http = httpx.post(base_url + url, content=json.dumps(body), timeout=120,
                          headers={"content-type": "application/json"})  # ASCII-escaped
        got = res["response"]
        assert got["status_code"] == http.status_code, (cid, got, http.text)
        if http.status_code != 200:
            assert got["body"] == http.json(), cid
            continue
        want = http.json()
        assert got["request_id"] == got["body"]["id"]
        for key in ("object", "model", "usage"):
            assert got["body"][key] == want[key], (cid, key)
        assert got["body"]["choices"] == want["choices"], cid
        assert got["body"]["tandem"]["seed"] == want["tandem"]["seed"]
