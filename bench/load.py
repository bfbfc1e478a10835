"""Closed-loop streaming clients for the reliability benchmarks (autoscale, soak, faults) and
their tests: each client sends one streamed completion at a time through plain HTTP (SSE
parsed here), the number of active clients follows a schedule, and every request ends as
one Outcome: its status, its measured TTFT / TPOT against its SLO, and whether its stream
was complete, refused, cut or failed."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PROMPTS = ("def parse_args(", "import os\n", "class Stack:\n", "for i in range(",
           "    return self.", "def __init__(self", "with open(", "if __name__ ==")


@dataclass(frozen=True)
class Outcome:
    start: float  # seconds since the run began
    end: float
    status: int  # HTTP status; 0 = no response (connection failed)
    slo: dict[str, float] = field(default_factory=dict)
    ttft_s: float | None = None
    tpot_s: float | None = None
    num_tokens: int = 0
    complete: bool = False  # a 200 whose stream reached [DONE]
    disconnected: bool = False  # the client hung up on purpose
    error: str | None = None  # what went wrong, for anything but a clean end or a 429
    gaps_s: tuple[float, ...] = ()  # between consecutive text chunks (inter-token latency)

    @property
    def is_refused(self) -> bool:
        return self.status in (429, 503) and self.error is None

    @property
    def is_failed(self) -> bool:
        """A server-side failure: neither complete, refused, nor cut by the client."""
        return not (self.complete or self.is_refused or self.disconnected)

    @property
    def met_slo(self) -> bool:
        if not self.complete:
            return False
        ttft, tpot = self.slo.get("ttft_ms"), self.slo.get("tpot_ms")
        if ttft is not None and (self.ttft_s is None or self.ttft_s * 1e3 > ttft):
            return False
        return tpot is None or self.tpot_s is None or self.tpot_s * 1e3 <= tpot


def body_of(rng: random.Random, max_tokens: int, slo: dict[str, float] | None,
            modes: tuple[str, ...] = ("auto",)) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": rng.choice(PROMPTS), "max_tokens": max_tokens,
                            "temperature": 0.8, "seed": rng.randrange(2**31), "stream": True,
                            "stream_options": {"include_usage": True},
                            "mode": rng.choice(modes)}
    if slo:
        body["slo"] = dict(slo)
    return body


async def one_request(client: httpx.AsyncClient, url: str, body: dict[str, Any], t0: float,
                      disconnect_after: int | None = None) -> Outcome:
    """Stream one completion; disconnect_after: hang up after that many text chunks."""
    start = time.monotonic()
    status, first, last, tokens, chunks = 0, None, None, 0, 0
    gaps: list[float] = []
    slo = body.get("slo") or {}

    def done(**kw: Any) -> Outcome:
        tpot = None
        if first is not None and last is not None and tokens > 1:
            tpot = (last - first) / (tokens - 1)
        return Outcome(start - t0, time.monotonic() - t0, status, slo,
                       None if first is None else first - start, tpot, tokens,
                       gaps_s=tuple(gaps), **kw)
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
            status = r.status_code
            if status != 200:
                text = (await r.aread()).decode(errors="replace")
                return done(error=None if status in (429, 503) else f"{status}: {text[:200]}")
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    return done(complete=True)
                obj = json.loads(data)
                if "error" in obj:
                    return done(error=f"stream error: {obj['error'].get('message')}")
                if obj.get("usage"):
                    tokens = obj["usage"]["completion_tokens"]
                if any(c.get("text") for c in obj.get("choices", [])):
                    now = time.monotonic()
                    if last is not None:
                        gaps.append(now - last)
                    first = now if first is None else first
                    last, chunks = now, chunks + 1
                    if disconnect_after is not None and chunks >= disconnect_after:
                        return done(disconnected=True)
            return done(error="stream ended without [DONE]")
    except httpx.HTTPError as err:
        return done(error=f"{type(err).__name__}: {err}")


async def run_clients(url: str, active: Callable[[float], int], duration_s: float,
                      make_body: Callable[[random.Random], dict[str, Any]],
                      num_clients: int, seed: int = 0, timeout_s: float = 120.0,
                      disconnect_p: float = 0.0, refusal_pause_s: float = 0.25,
                      stop: asyncio.Event | None = None,
                      sink: list[Outcome] | None = None) -> list[Outcome]:
    """num_clients loops; client i sends while i < active(t), until duration_s or `stop`.
    A refused client pauses refusal_pause_s before its next request (backing off).
    sink: the list each outcome is appended to as it ends (for a watcher), returned."""
    t0 = time.monotonic()
    outcomes: list[Outcome] = [] if sink is None else sink
    limits = httpx.Limits(max_connections=num_clients + 4)

    async def client_loop(i: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(seed * 1000 + i)
        while (t := time.monotonic() - t0) < duration_s and not (stop and stop.is_set()):
            if i >= active(t):
                await asyncio.sleep(0.1)
                continue
            cut = rng.randint(1, 8) if rng.random() < disconnect_p else None
            out = await one_request(client, url, make_body(rng), t0, cut)
            outcomes.append(out)
            if out.is_refused or out.status == 0:
                await asyncio.sleep(refusal_pause_s)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        await asyncio.gather(*(client_loop(i, client) for i in range(num_clients)))
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    failed = [o for o in outcomes if o.is_failed]
    done = [o for o in outcomes if o.complete]
    ttft = [o.ttft_s * 1e3 for o in done if o.ttft_s is not None]
    tpot = [o.tpot_s * 1e3 for o in done if o.tpot_s is not None]
    itl = [g * 1e3 for o in outcomes for g in o.gaps_s]
    return {"requests": n, "complete": len(done),
            "refused": sum(o.is_refused for o in outcomes),
            "disconnected": sum(o.disconnected for o in outcomes),
            "failed": len(failed), "errors": sorted({o.error or "" for o in failed})[:5],
            "attainment": sum(o.met_slo for o in outcomes) / n if n else 0.0,
            "ttft_ms_p50": percentile(ttft, 0.5), "ttft_ms_p99": percentile(ttft, 0.99),
            "tpot_ms_p50": percentile(tpot, 0.5), "tpot_ms_p99": percentile(tpot, 0.99),
            "itl_ms_p50": percentile(itl, 0.5), "itl_ms_p99": percentile(itl, 0.99)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]
