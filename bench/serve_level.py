"""One concurrency level of `tandem bench serve`: `--repeats` rounds, each the engine alone
(and, if asked, the staggered engine) then every HTTP variant on the same requests, and an
engine-alone run after the last round; the figure reported for a variant is the **median of
its per-round ratios** (HTTP over the engine runs just before and just after it: tokens over
their mean time, so a drift of the machine's speed across the round cancels) with their
range: on this shared 2-core box the engine's own speed moves by up to ~20 % between runs,
so a ratio of two best-of-N numbers from different moments is not a 10 % measurement, and
picking the best of either side flatters one of them. Per-process CPU and latencies are
shown for the median round.

Both sides get the same CPUs and niceness for the engine: the engine alone runs where the
default config puts the engine core (`Placement`: its CPUs and niceness), and the HTTP
client keeps off the CPUs of the core it drives, as the deployment's own processes do (a
client on the core's CPU would preempt it, as no remote client can)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench.proc_cpu import cpu_seconds, main_thread_seconds, snapshot
from bench.serve_clients import RunResult, engine_run, http_run, percentile
from cluster import cpu_placement
from engine.engine import LLMEngine
from engine.params import Mode

# Processes not on a token's path: their CPU is shown, not counted in "stack" (the
# controller's and Ray's own loops run at the same rate with no traffic at all).
BACKGROUND = ("bench (client)", "controller", "ray daemons")
ENGINE_STEP = "engine step"  # inside a replica's or the core's CPU, not a process
HEALTH_SUMS = ("engine_step_cpu_s", "ttft_total_s", "num_first_tokens", "queue_total_s",
               "num_queued", "num_steps")


@dataclass(frozen=True)
class Timed:
    """One closed-loop run and its CPU: ms per token by process group (HTTP) or of this
    process (the engine alone)."""
    res: RunResult
    cpu: dict[str, float]


@dataclass(frozen=True)
class Round:
    """One repeat at one concurrency: the engine, then each HTTP run, same requests, then
    the engine again (the next round's first run)."""
    engine: Timed
    staggered: Timed | None
    http: dict[str, Timed]
    engine_after: Timed | None = None

    @property
    def alone(self) -> list[Timed]:
        """The engine-alone runs around the HTTP runs: before and after (before alone if
        there is none after)."""
        return [self.engine] if self.engine_after is None else [self.engine, self.engine_after]

    @property
    def reference_tok_s(self) -> float:
        """The engine alone's speed around the HTTP runs: its tokens over the mean time of
        the runs before and after them."""
        runs = self.alone
        return sum(t.res.tokens for t in runs) / sum(t.res.seconds for t in runs)

    def cpu_ratio(self, name: str) -> float | None:
        """The engine alone's step-loop CPU per token (the runs around) over the server's
        core's in HTTP run name: the part of the ratio its steps' own cost explains (the
        rest is the core waiting for a CPU or for work)."""
        runs, h = self.alone, self.http[name].res
        if h.engine_cpu_s is None or any(t.res.engine_cpu_s is None for t in runs):
            return None
        alone = sum(t.res.engine_cpu_s or 0.0 for t in runs) / sum(t.res.tokens for t in runs)
        return alone / max(1e-12, h.engine_cpu_s / max(1, h.tokens))


@dataclass(frozen=True)
class Placement:
    """Where the engine alone runs: the CPUs and niceness the config gives the engine core
    (None: as this process)."""
    cpus: set[int] | None = None
    nice: int | None = None

    def describe(self) -> str:
        return (f"CPUs {sorted(self.cpus) if self.cpus else 'any'}, nice "
                f"{'as the bench' if self.nice is None else self.nice}")


@contextlib.contextmanager
def placed(cpus: set[int] | None, nice: int | None = None) -> Iterator[None]:
    """Every thread of this process on cpus at niceness nice for the block, then back."""
    cpus0, nice0 = os.sched_getaffinity(0), os.getpriority(os.PRIO_PROCESS, 0)
    if cpus:
        cpu_placement.pin_to(cpus)
    if nice is not None:
        cpu_placement.set_nice(nice)
    try:
        yield
    finally:
        if cpus:
            cpu_placement.pin_to(cpus0)
        if nice is not None:
            cpu_placement.set_nice(nice0)


def client_cpus(core: int | None) -> set[int] | None:
    """The CPUs for the HTTP client: this process's less the engine core's, when the core
    has CPUs of its own (None: no change)."""
    if core is None:
        return None
    mine = os.sched_getaffinity(0)
    left = mine - os.sched_getaffinity(core)
    return left if left and left != mine else None


def ratio_summary(ratios: list[float]) -> dict[str, Any]:
    """The reported figure: the median of per-round ratios, with their range."""
    if not ratios:
        raise ValueError("ratio_summary: no rounds")
    return {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
            "max": round(max(ratios), 3), "per_round": [round(r, 3) for r in ratios]}


def median_round(ratios: list[float]) -> int:
    """The index of the round whose ratio is the (lower) median: its CPU and latencies are
    the ones shown."""
    order = sorted(range(len(ratios)), key=lambda i: ratios[i])
    return order[(len(order) - 1) // 2]


def lat(res: RunResult) -> dict[str, float]:
    ms = 1e3
    server = {} if res.server_ttft_mean_s is None else {
        "ttft_mean_ms": round(sum(res.ttft_s) / max(1, len(res.ttft_s)) * ms, 1),
        "server_ttft_mean_ms": round(res.server_ttft_mean_s * ms, 1),
        "server_queue_mean_ms": round((res.server_queue_mean_s or 0.0) * ms, 1)}
    return {**server, "ttft_p50_ms": round(percentile(res.ttft_s, 50) * ms, 1),
            "ttft_p99_ms": round(percentile(res.ttft_s, 99) * ms, 1),
            "itl_p50_ms": round(percentile(res.gaps_s, 50) * ms, 1),
            "itl_p99_ms": round(percentile(res.gaps_s, 99) * ms, 1),
            # tokens per output that carried text (an SSE chunk; an engine step's output)
            "tokens_per_chunk": round(res.tokens / max(1, len(res.ttft_s) + len(res.gaps_s)),
                                      2), **engine_use(res)}


def engine_use(res: RunResult) -> dict[str, float]:
    """Tokens per engine step (AR: the running batch, on average) and the share of the run
    the engine's thread spent runnable but off the CPU."""
    if res.num_steps is None or res.engine_wait_s is None:
        return {}
    out = {"tokens_per_step": round(res.tokens / max(1, res.num_steps), 1),
           "engine_wait_pct": round(100 * res.engine_wait_s / max(1e-9, res.seconds), 1)}
    if res.engine_cpu_s is not None:  # where the step loop's wall time went, per token
        ms = 1e3 / max(1, res.tokens)
        out["loop_ms_per_token"] = {
            "wall": round(res.seconds * ms, 3), "on_cpu": round(res.engine_cpu_s * ms, 3),
            "waited": round(res.engine_wait_s * ms, 3), "blocked": round(
                (res.seconds - res.engine_cpu_s - res.engine_wait_s) * ms, 3)}
    return out


def fmt_lat(d: dict[str, float]) -> str:
    server = "" if "server_ttft_mean_ms" not in d else (
        f"TTFT mean {d['ttft_mean_ms']} (in the server {d['server_ttft_mean_ms']}, queued "
        f"{d['server_queue_mean_ms']}) ms  ")
    return (server + f"TTFT p50/p99 {d['ttft_p50_ms']}/{d['ttft_p99_ms']} ms  "
            f"gap p50/p99 {d['itl_p50_ms']}/{d['itl_p99_ms']} ms  "
            f"{d['tokens_per_chunk']} tokens/chunk" + (
                f"  {d['tokens_per_step']} tokens/step, engine waited for a CPU "
                f"{d['engine_wait_pct']} % of the run" if "tokens_per_step" in d else "")
            + ("\n                 step loop ms/token: wall {wall} = on a CPU {on_cpu} + "
               "waiting for one {waited} + blocked {blocked}".format(**d["loop_ms_per_token"])
               if "loop_ms_per_token" in d else ""))


def _server_sums(url: str) -> dict[str, float]:
    """The server's running sums (its /health): the CPU seconds its engine.step() calls took,
    and its own time to first token and queue time (from the request's arrival in the
    replica), to compare with what the client saw."""
    import httpx

    health = httpx.get(f"{url}/health", timeout=60).json()
    return {k: health[k] for k in HEALTH_SUMS}


def http_once(url: str, batch: list[str], c: int, args: argparse.Namespace, groups: list,
              client: str) -> Timed:
    """One closed-loop HTTP run: CPU ms per token by process group, plus "engine step": the
    server's own engine.step() CPU in that run."""
    core = next((g.pids[0] for g in groups if g.name == "engine core"), None)  # a process
    loop0 = main_thread_seconds(core) if core else None
    sums0, before = _server_sums(url), snapshot(groups)
    with placed(client_cpus(core)):
        res = asyncio.run(http_run(url, batch, c, args.max_tokens, args.mode, client))
    after, sums1 = snapshot(groups), _server_sums(url)
    if core and loop0:
        loop1 = main_thread_seconds(core)
        res.engine_cpu_s, res.engine_wait_s = loop1[0] - loop0[0], loop1[1] - loop0[1]
    d = {k: sums1[k] - sums0[k] for k in HEALTH_SUMS}
    cpu = {k: (after[k] - before[k]) * 1e3 / max(1, res.tokens) for k in after}
    cpu[ENGINE_STEP] = d["engine_step_cpu_s"] * 1e3 / max(1, res.tokens)
    res.server_ttft_mean_s = d["ttft_total_s"] / max(1, d["num_first_tokens"])
    res.server_queue_mean_s = d["queue_total_s"] / max(1, d["num_queued"])
    res.num_steps = int(d["num_steps"])
    return Timed(res, cpu)


def engine_once(engine: LLMEngine, batch: list[str], c: int, max_tokens: int, mode: Mode,
                admit_per_step: int, where: Placement) -> Timed:
    """One closed loop over the engine in this process, placed as the engine core: its
    result and CPU ms per token."""
    t0, loop0, steps0 = cpu_seconds(os.getpid()), main_thread_seconds(os.getpid()), \
        engine.num_steps
    with placed(where.cpus, where.nice):
        res = engine_run(engine, batch, c, max_tokens, mode, admit_per_step)
    ms = (cpu_seconds(os.getpid()) - t0) * 1e3 / max(1, res.tokens)
    loop1 = main_thread_seconds(os.getpid())  # engine_run: the main thread
    res.engine_cpu_s, res.engine_wait_s = loop1[0] - loop0[0], loop1[1] - loop0[1]
    res.num_steps = engine.num_steps - steps0
    return Timed(res, {"all": ms})


def runs(urls: dict[str, str], clients: list[str]) -> list[tuple[str, str, str]]:
    """(name, variant, client) of each HTTP run of a round."""
    return [(v if len(clients) == 1 else f"{v}/{c}", v, c) for v in urls for c in clients]


def one_round(engine: LLMEngine, urls: dict[str, str], groups: dict[str, list],
              args: argparse.Namespace, c: int, batch: list[str], where: Placement,
              e: Timed) -> Round:
    """The HTTP runs (and the staggered engine) after the engine run e, then the engine
    again."""
    mode = Mode(args.mode)
    s = engine_once(engine, batch, c, args.max_tokens, mode, args.engine_admit_per_step,
                    where) if args.engine_admit_per_step else None
    http: dict[str, Timed] = {}
    for name, variant, client in runs(urls, args.clients):
        h = http_once(urls[variant], batch, c, args, groups[variant], client)
        if h.res.tokens != e.res.tokens:
            raise RuntimeError(f"{name}: HTTP made {h.res.tokens} tokens, the engine "
                               f"{e.res.tokens}")
        http[name] = h
    return Round(e, s, http, engine_once(engine, batch, c, args.max_tokens, mode, 0, where))


def warm_up(engine: LLMEngine, urls: dict[str, str], args: argparse.Namespace, c: int,
            batch: list[str]) -> None:
    """Untimed, before a level's rounds: one short closed loop at C on every side, so that
    the one-off costs of a new batch size (allocations at new shapes, the server's first
    streams at this load) do not land in round 1 (in the fifth session's qC the engine alone
    ran 754 tok/s in round 1 against 900 and 928 after, at C = 16, with only a C = 2 warm-up)."""
    engine_run(engine, batch[:c], c, 8, Mode(args.mode))
    for _, variant, client in runs(urls, args.clients):
        asyncio.run(http_run(urls[variant], batch[:c], c, 8, args.mode, client))


def measure_level(engine: LLMEngine, urls: dict[str, str], groups: dict[str, list],
                  args: argparse.Namespace, c: int, prompts: list[str],
                  where: Placement) -> dict[str, Any]:
    n = args.requests or max(4, 2 * c)
    batch = [prompts[i % len(prompts)] for i in range(n)]
    warm_up(engine, urls, args, c, batch)
    rounds: list[Round] = []
    e = engine_once(engine, batch, c, args.max_tokens, Mode(args.mode), 0, where)
    for _ in range(args.repeats):
        rounds.append(one_round(engine, urls, groups, args, c, batch, where, e))
        e = rounds[-1].alone[-1]  # the next round's engine-before
    row: dict[str, Any] = {"concurrency": c, "requests": n, **engine_row(rounds)}
    print(f"  C={c:<3} engine {row['engine_tok_s']['median']:7.1f} tok/s median (per run "
          f"{_list(row['engine_tok_s']['per_run'], 1)}), "
          f"{row['engine_cpu_ms_per_token']:.2f} CPU ms/token  {fmt_lat(row['engine'])}",
          flush=True)
    if rounds[0].staggered is not None:
        row["engine_staggered"] = staggered_row(rounds, args.engine_admit_per_step)
        st = row["engine_staggered"]
        print(f"        engine, {args.engine_admit_per_step} admitted per step: "
              f"{st['tok_s']['median']:7.1f} tok/s median, {st['cpu_ms_per_token']:.2f} CPU "
              f"ms/token  {fmt_lat(st)}", flush=True)
    for name in rounds[0].http:
        row[name] = variant_row(name, rounds)
        _print_variant(name, row[name])
    return row


def engine_summary(runs: list[Timed]) -> tuple[dict[str, Any], Timed]:
    """Engine-alone runs in order: tok/s median and per run, and the median run."""
    tok_s = [t.res.tok_s for t in runs]
    return ({"median": round(statistics.median(tok_s), 1),
             "per_run": [round(t, 1) for t in tok_s]}, runs[median_round(tok_s)])


def engine_row(rounds: list[Round]) -> dict[str, Any]:
    """Every engine-alone run of the level: one before each round, and one after the last."""
    tok_s, mid = engine_summary([r.engine for r in rounds[:-1]] + rounds[-1].alone)
    return {"engine_tok_s": tok_s, "engine_cpu_ms_per_token": round(mid.cpu["all"], 3),
            "engine": lat(mid.res)}


def staggered_row(rounds: list[Round], admit_per_step: int) -> dict[str, Any]:
    tok_s, mid = engine_summary([r.staggered for r in rounds if r.staggered is not None])
    return {"admit_per_step": admit_per_step, "tok_s": tok_s,
            "cpu_ms_per_token": round(mid.cpu["all"], 3), **lat(mid.res)}


def variant_row(name: str, rounds: list[Round]) -> dict[str, Any]:
    """A variant's row: ratios per round and their median; CPU and latencies of the median
    round; "stack" = the CPU on a token's path (proxy, replicas, engine core) minus the
    server's own engine.step() CPU; "vs alone" subtracts the engine alone's CPU instead."""
    ratios = [r.http[name].res.tok_s / r.reference_tok_s for r in rounds]
    i = median_round(ratios)
    h, e = rounds[i].http[name], rounds[i].engine
    path = sum(v for k, v in h.cpu.items() if k not in (*BACKGROUND, ENGINE_STEP))
    out: dict[str, Any] = {
        "ratio": ratio_summary(ratios), "median_round": i,
        "http_tok_s": {"median": round(statistics.median(
            [r.http[name].res.tok_s for r in rounds]), 1), "in_median_round": round(
            h.res.tok_s, 1)},
        "cpu_ms_per_token": {k: round(v, 3) for k, v in h.cpu.items()},
        "stack_cpu_ms_per_token": round(path - h.cpu[ENGINE_STEP], 3),
        "stack_vs_engine_alone_ms_per_token": round(path - e.cpu["all"], 3), **lat(h.res)}
    cpu_ratios = [r.cpu_ratio(name) for r in rounds]
    if all(x is not None for x in cpu_ratios):
        out["cpu_ratio"] = ratio_summary([x for x in cpu_ratios if x is not None])
    if rounds[0].staggered is not None:
        out["ratio_vs_staggered"] = ratio_summary(
            [r.http[name].res.tok_s / r.staggered.res.tok_s for r in rounds
             if r.staggered is not None])
    return out


def _list(xs: list[float], digits: int = 3) -> str:
    return ", ".join(f"{x:.{digits}f}" for x in xs)


def _print_variant(name: str, v: dict[str, Any]) -> None:
    r = v["ratio"]
    st = v.get("ratio_vs_staggered")
    vs_s = f"; vs staggered median {st['median']:.3f} ({_list(st['per_round'])})" if st else ""
    cr = v.get("cpu_ratio")
    vs_s += (f"\n                 step loop CPU per token, alone / server: median "
             f"{cr['median']:.3f} (per round {_list(cr['per_round'])})") if cr else ""
    procs = "  ".join(f"{k} {x:.2f}" for k, x in v["cpu_ms_per_token"].items())
    print(f"        {name:<8} HTTP {v['http_tok_s']['median']:7.1f} tok/s median  ratio median "
          f"{r['median']:.3f} [{r['min']:.3f}-{r['max']:.3f}] (per round "
          f"{_list(r['per_round'])}){vs_s}\n"
          f"                 median round {v['median_round']}: stack "
          f"{v['stack_cpu_ms_per_token']:.2f} (vs alone "
          f"{v['stack_vs_engine_alone_ms_per_token']:.2f}) CPU ms/token  {fmt_lat(v)}\n"
          f"                 CPU ms/token: {procs}", flush=True)
