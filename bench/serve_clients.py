"""The two closed loops `tandem bench serve` compares: C requests in flight against the engine
in this process, and C streaming HTTP clients against the server. Both record time to first
token and the gaps between token-bearing outputs (engine: steps; HTTP: SSE chunks with
text, so a chunk that coalesces k tokens counts as one gap)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from engine.engine import LLMEngine
from engine.params import DecodeParams, Mode, SamplingParams


@dataclass
class RunResult:
    tokens: int = 0
    seconds: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    gaps_s: list[float] = field(default_factory=list)
    # HTTP runs: the server's own mean time to first token and queue time, from a request's
    # arrival in the replica (the rest of the client's TTFT is Serve's proxy and the way back)
    server_ttft_mean_s: float | None = None
    server_queue_mean_s: float | None = None
    # the engine's steps in the run, and its thread's time on a CPU and waiting for one
    # while runnable (bench/proc_cpu.py main_thread_seconds): is the batch kept full, is the
    # engine starved? The rest of the run's time the thread was blocked (no work).
    num_steps: int | None = None
    engine_wait_s: float | None = None
    engine_cpu_s: float | None = None

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def engine_run(engine: LLMEngine, prompts: list[str], concurrency: int, max_tokens: int,
               mode: Mode, admit_per_step: int = 0) -> RunResult:
    """Closed loop over the engine: C requests in flight. admit_per_step > 0 admits at most
    that many new requests before each step (staggered arrivals, as through a server),
    instead of every free slot at once (equal-length requests then run in lockstep waves)."""
    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0, ignore_eos=True)
    dp = DecodeParams(mode=mode)
    todo = list(prompts)
    res = RunResult()
    sent: dict[str, float] = {}
    last: dict[str, float] = {}
    start = time.perf_counter()
    while todo or sent:
        room = concurrency - len(sent)
        for _ in range(min(room, admit_per_step or room, len(todo))):
            sent[engine.add_request(todo.pop(0), sp, dp).id] = time.perf_counter()
        outs = engine.step()
        now = time.perf_counter()
        for out in outs:
            rid = out.request_id
            if out.new_token_ids:
                prev = last.get(rid)
                (res.ttft_s if prev is None else res.gaps_s).append(
                    now - (sent[rid] if prev is None else prev))
                last[rid] = now
            if out.finished:
                res.tokens += len(out.token_ids)
                del sent[rid]
                last.pop(rid, None)
    res.seconds = time.perf_counter() - start
    return res


def _body(prompt: str, max_tokens: int, mode: str) -> dict[str, Any]:
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "seed": 0,
            "ignore_eos": True, "mode": mode, "stream": True,
            "stream_options": {"include_usage": True}}


class _Stream:
    """One SSE response being read: records its chunks' times into a RunResult."""

    def __init__(self, res: RunResult) -> None:
        self.res, self.sent, self.last = res, time.perf_counter(), None

    def line(self, line: str) -> None:
        if not line.startswith("data: {"):
            return
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            self.res.tokens += chunk["usage"]["completion_tokens"]
        if chunk.get("choices") and chunk["choices"][0].get("text"):
            now = time.perf_counter()
            (self.res.ttft_s if self.last is None else self.res.gaps_s).append(
                now - (self.sent if self.last is None else self.last))
            self.last = now


async def _one_httpx(client: Any, url: str, body: dict[str, Any], res: RunResult) -> None:
    stream = _Stream(res)
    async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            stream.line(line)


async def _one_aiohttp(session: Any, url: str, body: dict[str, Any], res: RunResult) -> None:
    stream = _Stream(res)
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for raw in resp.content:  # one SSE line at a time
            stream.line(raw.decode())


CLIENTS = ("httpx", "aiohttp")


async def http_run(url: str, prompts: list[str], concurrency: int, max_tokens: int,
                   mode: str, client: str = "httpx") -> RunResult:
    """C streaming clients over one connection pool: httpx (pure-Python HTTP parsing) or
    aiohttp (its HTTP parser is C); both read SSE line by line and parse every chunk."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    res = RunResult()

    async def client_loop(session: Any, one: Any) -> None:
        while not queue.empty():
            await one(session, url, _body(queue.get_nowait(), max_tokens, mode), res)

    async def run(session: Any, one: Any) -> None:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(session, one) for _ in range(concurrency)))
        res.seconds = time.perf_counter() - start

    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency + 4)
        async with httpx.AsyncClient(timeout=600, limits=limits) as session:
            await run(session, _one_httpx)
    elif client == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency + 4)
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await run(session, _one_aiohttp)
    else:
        raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")
    return res
