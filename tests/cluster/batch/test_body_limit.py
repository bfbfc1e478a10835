"""A batch line's body is held to the HTTP API's body-size limit (cluster/limits.py): the
same 413 and error body as the HTTP edge gives a client posting that body."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from cluster import limits
from cluster.batch.adapter import Adapter, Answer, Steering
from cluster.batch.lines import BatchLine
from cluster.config import load_config
from cluster.job_builder import BadRequest

LIMIT = 2048


def http_answer(body: dict) -> tuple[int, dict]:
    """What the HTTP edge answers: the real middleware in front of a FastAPI app."""
    app = FastAPI()
    app.add_middleware(limits.BodySizeLimit)
    app.state.max_body_bytes = LIMIT

    @app.post("/v1/completions")
    async def ok() -> dict:
        return {"ok": True}

    resp = TestClient(app).post("/v1/completions",
                                content=json.dumps(body, separators=(",", ":")),
                                headers={"content-type": "application/json"})
    return resp.status_code, resp.json()


def test_a_batch_body_over_the_limit_gets_the_http_413() -> None:
    adapter = Adapter(load_config({"limits": {"max_body_bytes": LIMIT}}), None)
    big = {"prompt": "x" * LIMIT, "max_tokens": 4}
    got = adapter.prepare(BatchLine(1, "big", "/v1/completions", big), Steering())
    assert isinstance(got, Answer)
    status, body = http_answer(big)
    assert (got.status_code, got.body) == (status, body) == (413, got.body)
    assert got.body["error"]["code"] == "request_too_large"
    # Just under the limit: past the size check (here refused by n's bound, a 400, as the
    # HTTP API refuses it once the middleware lets it through).
    fits = {"prompt": "x" * (LIMIT - 100), "n": 99}
    assert len(json.dumps(fits, separators=(",", ":"))) <= LIMIT
    got = adapter.prepare(BatchLine(2, "fits", "/v1/completions", fits), Steering())
    assert isinstance(got, Answer) and got.status_code == 400
    assert http_answer(fits)[0] == 200  # the middleware passed it on


def test_non_ascii_counts_in_utf8_bytes() -> None:
    text = "é" * (LIMIT // 2)  # LIMIT bytes of UTF-8, half as many characters
    limits.check_body_size({"p": "é" * 10}, LIMIT)
    with pytest.raises(BadRequest) as err:
        limits.check_body_size({"p": text}, LIMIT)
    assert err.value.status == 413
