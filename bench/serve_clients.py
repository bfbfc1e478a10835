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

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def engine_run(engine: LLMEngine, prompts: list[str], concurrency: int, max_tokens: int,
               mode: Mode) -> RunResult:
    """Closed loop over the engine: C requests in flight."""
    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0, ignore_eos=True)
    dp = DecodeParams(mode=mode)
    todo = list(prompts)
    res = RunResult()
    sent: dict[str, float] = {}
    last: dict[str, float] = {}
    start = time.perf_counter()
    while todo or sent:
        while todo and len(sent) < concurrency:
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


async def _one(client: Any, url: str, prompt: str, max_tokens: int, mode: str,
               res: RunResult) -> None:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "seed": 0,
            "ignore_eos": True, "mode": mode, "stream": True,
            "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    last = None
    async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                res.tokens += chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                now = time.perf_counter()
                (res.ttft_s if last is None else res.gaps_s).append(
                    now - (sent if last is None else last))
                last = now


async def http_run(url: str, prompts: list[str], concurrency: int, max_tokens: int,
                   mode: str) -> RunResult:
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    res = RunResult()
    limits = httpx.Limits(max_connections=concurrency + 4)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            await _one(client, url, queue.get_nowait(), max_tokens, mode, res)

    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        res.seconds = time.perf_counter() - start
    return res
