"""`python -m bench.hostile`: hostile input against a deployed ingress. Hand-written bodies
(10 MB prompts, 20,000-deep nesting, NUL bytes, lone surrogates, invalid UTF-8, NaN and
Infinity, token ids outside the vocabulary, 1,000 stop strings, n = 10,000, seeds above
2**64, 1,000 messages, unknown roles, wrong content types), then `schemathesis` cases
generated from the ingress's own OpenAPI schema (every operation, valid and invalid data).
Every answer must be a 2xx, or a 4xx in OpenAI's error shape (naming the field where the
case says which); never a 5xx; and the server must answer normally afterwards with every KV
block free. Prints one verdict line. tests/cluster/test_hostile.py runs the same with fewer
generated cases."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

CMPL, CHAT = "/v1/completions", "/v1/chat/completions"
JSON = "application/json"


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str
    body: bytes
    want: tuple[int, ...]  # acceptable statuses
    param: str | None = None  # the field a 400 must name
    content_type: str | None = JSON


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _raw(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogatepass")


def hostile_cases() -> list[Hostile]:
    deep = "[" * 20_000 + "]" * 20_000
    msg = {"role": "user", "content": "hi"}
    return [
        Hostile("10 MB prompt", CMPL, _j({"prompt": "a" * 10_000_000, "max_tokens": 1}),
                (413,)),
        Hostile("20,000-deep prompt", CMPL, _raw(f'{{"prompt": {deep}, "max_tokens": 1}}'),
                (400,)),
        Hostile("20,000-deep object", CMPL,
                _raw('{"prompt": "a", "slo": ' + '{"a":' * 20_000 + "1" + "}" * 20_001), (400,)),
        Hostile("NUL in the prompt", CMPL, _j({"prompt": "a\u0000b\u0000", "max_tokens": 2}),
                (200,)),
        Hostile("raw NUL byte in a string", CMPL, b'{"prompt": "a\x00b", "max_tokens": 1}',
                (400,)),
        Hostile("lone surrogate prompt", CMPL, _raw('{"prompt": "ab\\ud800c", "max_tokens": 1}'),
                (400,), "prompt"),
        Hostile("lone surrogate model", CMPL, _raw('{"prompt": "a", "model": "\\udfff"}'),
                (400,), "model"),
        Hostile("lone surrogate message", CHAT,
                _raw('{"messages": [{"role": "user", "content": "\\ud83d"}]}'), (400,),
                "messages.0.content"),
        Hostile("invalid UTF-8", CMPL, b'{"prompt": "\xff\xfe\xc3(", "max_tokens": 1}', (400,)),
        Hostile("NaN temperature", CMPL, b'{"prompt": "a", "temperature": NaN}', (400,),
                "temperature"),
        Hostile("Infinity ttft", CMPL, b'{"prompt": "a", "slo": {"ttft_ms": Infinity}}',
                (400,), "slo.ttft_ms"),
        Hostile("1e400 top_p", CMPL, b'{"prompt": "a", "top_p": 1e400}', (400,), "top_p"),
        Hostile("token id over the vocabulary", CMPL, _j({"prompt": [5, 10**9],
                                                          "max_tokens": 1}), (400,), "prompt"),
        Hostile("negative token id", CMPL, _j({"prompt": [-1], "max_tokens": 1}), (400,),
                "prompt"),
        Hostile("token id 2**70", CMPL, _j({"prompt": [[2**70]], "max_tokens": 1}), (400,),
                "prompt"),
        Hostile("1,000 stop strings", CMPL, _j({"prompt": "a", "stop": ["x"] * 1000}), (400,),
                "stop"),
        Hostile("n = 10,000", CMPL, _j({"prompt": "a", "n": 10_000}), (400,), "n"),
        Hostile("seed 2**64 + 1", CMPL, _j({"prompt": "a", "seed": 2**64 + 1}), (400,),
                "seed"),
        Hostile("max_tokens 10**30", CMPL, _j({"prompt": "a", "max_tokens": 10**30}), (400,),
                "max_tokens"),
        Hostile("1,000 messages", CHAT, _j({"messages": [msg] * 1000}), (400,), "messages"),
        Hostile("unknown role", CHAT, _j({"messages": [{"role": "wizard", "content": "x"}]}),
                (400,), "messages.0.role"),
        Hostile("10,000 prompts", CMPL, _j({"prompt": ["a"] * 10_000, "max_tokens": 1}),
                (400,), "prompt"),
        Hostile("text/plain body", CMPL, _j({"prompt": "a", "max_tokens": 1}), (400, 415),
                content_type="text/plain"),
        Hostile("form body", CMPL, b"prompt=a&max_tokens=1", (400, 415),
                content_type="application/x-www-form-urlencoded"),
        Hostile("no content type", CMPL, _j({"prompt": "a", "max_tokens": 1}), (200, 400, 415),
                content_type=None),
        Hostile("empty body", CMPL, b"", (400,)),
        Hostile("JSON null", CMPL, b"null", (400,)),
        Hostile("JSON array", CHAT, b"[1, 2]", (400,)),
    ]


def problem(resp: httpx.Response | Any, want: tuple[int, ...] = (),
            param: str | None = None) -> str | None:
    """What is wrong with an answer to hostile input, or None. resp: httpx or requests."""
    status = resp.status_code
    if status >= 500:
        return f"{status}: {resp.text[:200]}"
    if want and status not in want:
        return f"status {status}, wanted {want}: {resp.text[:200]}"
    if 400 <= status < 500:
        try:
            err = json.loads(resp.content)["error"]
        except (ValueError, KeyError, TypeError):
            return f"{status} not in OpenAI's error shape: {resp.text[:200]}"
        if not isinstance(err.get("message"), str) or not err.get("type"):
            return f"{status} error without message/type: {err}"
        if param is not None and err.get("param") != param:
            return f"{status} names {err.get('param')!r}, wanted {param!r}: {err['message']}"
    return None


def run_hostile(url: str) -> list[tuple[str, int, str | None]]:
    """(case, status, problem) per hand-written case."""
    out = []
    with httpx.Client(timeout=120) as client:
        for case in hostile_cases():
            headers = {"content-type": case.content_type} if case.content_type else {}
            r = client.post(url + case.path, content=case.body, headers=headers)
            out.append((case.name, r.status_code, problem(r, case.want, case.param)))
    return out


def server_fine(url: str) -> str | None:
    """None when a normal completion works and every KV block is free again."""
    r = httpx.post(f"{url}{CMPL}", json={"prompt": "def f(", "max_tokens": 4,
                                        "temperature": 0}, timeout=120)
    if r.status_code != 200 or not r.json()["choices"][0]["text"]:
        return f"normal completion: {r.status_code} {r.text[:200]}"
    for _ in range(50):
        h = httpx.get(f"{url}/health", timeout=30).json()
        if h["kv_free_blocks"] == h["kv_blocks"] and h["num_running"] == 0:
            return None
        import time

        time.sleep(0.2)
    return f"KV not free after the run: {h}"


def cap_tokens(body: Any, cap: int = 4) -> None:
    """A valid body's output length, capped (a chat body without one gets the cap): the
    CPU a generated case costs stays small; invalid values are left for the server."""
    if not isinstance(body, dict):
        return
    keys = [k for k in ("max_tokens", "max_completion_tokens") if k in body]
    if "messages" in body and not keys:
        body["max_tokens"] = cap
    for k in keys:
        v = body[k]
        if isinstance(v, int) and not isinstance(v, bool) and cap < v < 2**31:
            body[k] = cap


def fuzz(url: str, max_examples: int, seed: int = 0) -> tuple[Counter, list[str]]:
    """Schemathesis cases from the ingress's /openapi.json, every operation, valid and
    invalid data; returns (statuses, problems); output lengths capped (cap_tokens)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    strategy = st.one_of([op.as_strategy(generation_mode=m) for op in ops
                          for m in GenerationMode])
    statuses: Counter = Counter()
    problems: list[str] = []

    @hseed(seed)
    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(case=strategy)
    def one(case: Any) -> None:
        cap_tokens(case.body)
        r = case.call(base_url=url, timeout=120)
        statuses[(case.operation.path, r.status_code)] += 1
        bad = problem(r)
        if bad is not None:
            problems.append(f"{case.method} {case.operation.path} {case.body!r:.200}: {bad}")

    one()
    return statuses, problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    p.add_argument("--examples", type=int, default=1200, help="schemathesis cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url", default=None, help="a running server (default: deploy local.yaml)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from bench import deploy

    args = parse_args(argv)
    url = args.url
    if url is None:
        deploy.start_ray()
        name, cfg = deploy.yaml_args("local.yaml")
        url = deploy.deploy(cfg, name)
    hand = run_hostile(url)
    statuses, problems = fuzz(url, args.examples, args.seed)
    problems += [f"{name}: {bad}" for name, _, bad in hand if bad]
    after = server_fine(url)
    if after:
        problems.append(f"after: {after}")
    n = sum(statuses.values())
    by_status = Counter()
    for (_, status), k in statuses.items():
        by_status[status] += k
    ops = sorted({path for path, _ in statuses})
    print(json.dumps({"statuses": {f"{p} {s}": k for (p, s), k in sorted(statuses.items())},
                      "hand": hand, "problems": problems}, indent=1))
    print(f"hostile {'PASS' if not problems else 'FAIL'} | {len(hand)} hand-written bodies, "
          f"{n} schemathesis cases over {len(ops)} operations {dict(sorted(by_status.items()))}"
          f", {len(problems)} problems, server fine after: {after is None}", flush=True)


if __name__ == "__main__":
    main()
