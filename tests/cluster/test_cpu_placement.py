"""cluster/cpu_placement.py: every thread of a process moves (Linux keeps affinity and nice
per thread), the replica keeps off the engine core's CPUs and the core runs on them alone.
Each case runs in a child process, so that pytest's own threads are never pinned."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cluster.config import load_config

CPUS = sorted(os.sched_getaffinity(0))
needs_two = pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")

# The child's report: every thread's CPUs and niceness.
REPORT = """
import json, os
def threads(pid):
    return {t: (sorted(os.sched_getaffinity(int(t))), os.getpriority(os.PRIO_PROCESS, int(t)))
            for t in os.listdir(f"/proc/{pid}/task")}
"""


def child(code: str, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", REPORT + code], capture_output=True,
                         text=True, timeout=300, env={**os.environ, **(env or {})},
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_two
def test_every_thread_keeps_off_the_cpus_and_later_threads_follow() -> None:
    got = child(f"""
import threading, time
from cluster import cpu_placement
stop = threading.Event()
threading.Thread(target=stop.wait, daemon=True).start()  # a thread from before
left = cpu_placement.keep_off({{{CPUS[0]}}})
threading.Thread(target=stop.wait, daemon=True).start()  # and one from after
cpu_placement.set_nice(os.getpriority(os.PRIO_PROCESS, 0) + 3)
threading.Thread(target=stop.wait, daemon=True).start()
print(json.dumps({{"left": sorted(left), "threads": threads(os.getpid())}}))
""")
    assert got["left"] == CPUS[1:]
    assert len(got["threads"]) == 4
    assert all(cpus == CPUS[1:] for cpus, _ in got["threads"].values())
    nice = {n for _, n in got["threads"].values()}
    assert len(nice) == 1 and nice != {os.getpriority(os.PRIO_PROCESS, 0)}


def test_keeping_off_every_cpu_is_refused() -> None:
    got = child(f"""
from cluster import cpu_placement
try:
    cpu_placement.keep_off({set(CPUS)!r})
    print(json.dumps("kept"))
except ValueError as err:
    print(json.dumps(str(err)))
""")
    assert "leaves this process none" in got


@needs_two
def test_the_proxy_keeps_off_the_cpus_its_environment_names() -> None:
    code = """
from cluster.stream_guard import proxy_middlewares
proxy_middlewares()
print(json.dumps(threads(os.getpid())))
"""
    pinned = child(code, {"TANDEM_PROXY_AVOID_CPUS": f"{CPUS[-1]}"})
    assert all(cpus == CPUS[:-1] for cpus, _ in pinned.values())
    free = child(code, {"TANDEM_PROXY_AVOID_CPUS": ""})
    assert all(cpus == CPUS for cpus, _ in free.values())


@needs_two
def test_under_auto_the_proxy_and_the_controller_keep_off_the_last_cpu() -> None:
    """`engine_core_cpus: auto` gives a 1-thread core the last CPU; local.yaml tells Serve's
    proxy and controller (its callback, by import path) "auto": they keep off that CPU."""
    from cluster.stream_guard import CONTROLLER_CALLBACK

    module, name = CONTROLLER_CALLBACK.split(":")
    code = f"""
import importlib
getattr(importlib.import_module("{module}"), "{name}")()
print(json.dumps(threads(os.getpid())))
"""
    got = child(code, {"TANDEM_PROXY_AVOID_CPUS": "auto"})
    assert all(cpus == CPUS[:-1] for cpus, _ in got.values())


def test_a_bad_cpu_list_for_the_proxy_is_named() -> None:
    from cluster.cpu_placement import parse_cpus

    assert parse_cpus(" 1,3 ") == {1, 3} and parse_cpus("") is None
    with pytest.raises(ValueError, match="TANDEM_PROXY_AVOID_CPUS.*'last'"):
        parse_cpus("last")


@needs_two
def test_the_engine_core_runs_alone_on_its_cpus_and_the_replica_elsewhere() -> None:
    """A replica (ModelServer with the engine-core process) in a child, started below nice 0
    as a Ray replica at Ray's 15 would be: the core's step loop on the configured CPU, its
    pipe sender on the others (it would preempt the step loop), at nice 0 by default where
    it may (CAP_SYS_NICE; without, at the replica's); the replica's threads on the others."""
    got = child(f"""
from cluster.model_server import ModelServer
os.nice(3)
s = ModelServer({{"model": {{"num_kv_blocks": 64, "max_model_len": 256, "engine_core": "process",
                 "policy": "first_come", "torch_threads": 1, "engine_core_cpus": [{CPUS[-1]}]}}}})
core = threads(s.loop.proc.pid)
s.loop.shutdown()
print(json.dumps({{"core": core, "pid": s.loop.proc.pid, "replica": threads(os.getpid())}}))
""")
    nice = 0 if os.geteuid() == 0 else min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)
    assert got["core"].pop(str(got["pid"])) == [[CPUS[-1]], nice]  # the step loop
    others = sorted(got["core"].values())  # the sender, and any helper the step loop started
    assert others.count([CPUS[:-1], nice]) == 1
    assert all(v == [[CPUS[-1]], nice] for v in others if v != [CPUS[:-1], nice])
    assert all(cpus == CPUS[:-1] for cpus, _ in got["replica"].values())


@pytest.mark.parametrize("cpus", [[], [-1], [1, 1]])
def test_engine_core_cpus_must_name_distinct_cpus(cpus: list[int]) -> None:
    with pytest.raises(ValueError, match="engine_core_cpus"):
        load_config({"model": {"engine_core_cpus": cpus}})


def test_auto_gives_the_core_the_last_cpus_and_leaves_the_replica_at_least_one() -> None:
    from cluster.cpu_placement import core_cpus

    assert core_cpus("auto", None) == ({CPUS[-1]} if len(CPUS) > 1 else None)
    assert core_cpus("auto", len(CPUS)) is None  # nothing would be left for the replica
    assert core_cpus("auto", len(CPUS) - 1) == (set(CPUS[1:]) if len(CPUS) > 1 else None)
    assert core_cpus([1, 3], 1) == {1, 3}
    assert core_cpus(None, 1) is None
    assert load_config({"model": {"engine_core_cpus": "auto"}}).model.engine_core_cpus == "auto"
    with pytest.raises(ValueError, match="engine_core_cpus"):
        load_config({"model": {"engine_core_cpus": "all"}})
