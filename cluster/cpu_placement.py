"""Where the engine core and the serving processes run on a node's CPUs.

On a CPU node the engine core's step loop and the serving processes (the replica's event
loop, Serve's proxy) share the cores, and Ray starts every worker at nice 15
(RAY_worker_niceness), which the engine core inherits from its replica. Measured at C = 64
on the 2-core box (BENCHMARKS.md > Serving, sixth and ninth sessions): shared, the core's
thread waited for a CPU 7-28 % of an HTTP run and was switched out 26-54 times a step (the
replica, the proxy and the client wake for every request and chunk, and each wake-up on the
core's CPU preempts it); pinned alone to one CPU, 4-6 % and 6-11 times (most by its own pipe
sender, now kept off that CPU), and its steps cost no more CPU per token than the engine
alone's. The ratio to the engine alone: median 0.90 over 13 pinned rounds against 0.83 over
11 shared, with a low tail (0.69-0.81) when something else holds the core's CPU. The sixth
session's pinned run, whose steps cost ~50 % more per token, did not repeat. So
ray_configs/local.yaml pins the core (`engine_core_cpus: auto`: core_cpus below).

Under `auto` the rest of Serve keeps off the core's CPU too: the proxy and the controller
read PROXY_ENV ("auto": the node's last CPU, where `auto` puts a 1-thread core), which
ray_configs/local.yaml sets in their environment. Measured at C = 64 (tenth session): the
core's wait for a CPU 3.2-3.8 % -> 0.6-1.5 % of a run, the ratio's median over 25 rounds
0.889 against 0.861 over 15, and better in each of three paired calls.

Niceness is on by default (seventh session, same section): a Ray that tandem starts runs its
workers at nice 0 (ray_start_env), and the engine core sets itself to nice 0
(`model.engine_core_nice`), so under a Ray started elsewhere at Ray's 15 it still ranks
level with ordinary processes where it may (CAP_SYS_NICE).

Linux keeps affinity and niceness per thread, and a new thread inherits its creator's: so
each call here sets every thread the process has now, and threads started later follow.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# Serve's proxy and controller have no app config: they read the engine cores' CPUs from
# their environment (a YAML's controller_options; the proxy inherits the controller's env):
# a list, or "auto" (the last CPU, as `engine_core_cpus: auto` gives a 1-thread core).
PROXY_ENV = "TANDEM_PROXY_AVOID_CPUS"
# Read by the raylet when it starts: the niceness of every worker it spawns (Ray's own
# default is 15; Ray's job manager sets 0 for job drivers).
RAY_NICE_ENV = "RAY_worker_niceness"
SERVING_WORKER_NICE = 0
# Read by Serve's controller: how long the proxy's ready call may take before it counts as a
# miss (Ray's 5 s; three misses in a row and the controller kills the proxy, and serve.start,
# which waits on that first proxy, raises ActorDiedError: seen in the tests under two CPU
# hogs, fifteenth session; ray-project/ray#39739). 20 s x 3 misses = serve.start's own 60 s
# wait for the proxy (Serve's HTTP_PROXY_TIMEOUT), so a slow proxy start is given all the
# time serve.start gives it (tests/cluster/test_proxy_ready_check.py checks the sum).
PROXY_READY_ENV = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
PROXY_READY_CHECK_S = 20.0


def ray_start_env(*, auth_off: bool = False) -> None:
    """Before a ray.init that may start a Ray of our own, the environment its raylet reads:
    workers (Serve's proxy, the replicas, the engine cores they spawn) at nice 0, level with
    the load they serve and with Ray's daemons, instead of Ray's 15, which ranked the step
    loop below every ordinary process on a CPU node (BENCHMARKS.md > Serving, seventh
    session); Serve's proxy given serve.start's whole wait to answer its first ready check
    (PROXY_READY_ENV); no usage stats; and with auth_off, no token auth (benches' Rays of
    their own on this machine). A value the caller set in the environment wins; a Ray
    already running keeps its own."""
    os.environ.setdefault(RAY_NICE_ENV, str(SERVING_WORKER_NICE))
    os.environ.setdefault(PROXY_READY_ENV, str(PROXY_READY_CHECK_S))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if auth_off:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def core_cpus(setting: list[int] | str | None, torch_threads: int | None) -> set[int] | None:
    """The CPUs the engine core is to run on alone (`model.engine_core_cpus`): a list as
    given; "auto": the last torch_threads (1 if unset) of the CPUs this process may use, if
    it may use more than that (else None: nothing left for the replica); None: no pinning."""
    if setting != "auto":
        return None if setting is None else set(setting)
    mine, n = sorted(os.sched_getaffinity(0)), torch_threads or 1
    return set(mine[-n:]) if len(mine) > n else None


def _threads() -> list[int]:
    return [int(t) for t in os.listdir("/proc/self/task")]


def pin_to(cpus: set[int]) -> None:
    """Run every thread of this process on cpus only."""
    for tid in _threads():
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            continue


def pin_thread(cpus: set[int]) -> None:
    """Run the calling thread only on cpus (threads it starts later follow)."""
    os.sched_setaffinity(0, cpus)  # pid 0: the caller's own thread, not the process


def keep_off(cpus: set[int]) -> set[int]:
    """Run every thread of this process on the CPUs it may use now, less cpus; returns them.
    Raises if none would be left (the engine core would have the node to itself)."""
    left = os.sched_getaffinity(0) - set(cpus)
    if not left:
        raise ValueError(f"keeping off CPUs {sorted(cpus)} leaves this process none "
                         f"(it may use {sorted(os.sched_getaffinity(0))})")
    pin_to(left)
    return left


def set_nice(nice: int) -> bool:
    """Every thread of this process at niceness nice. Lowering it (below Ray's 15) needs
    CAP_SYS_NICE (root has it): without, a warning, the old value kept, and False."""
    try:
        for tid in _threads():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except ProcessLookupError:  # the thread ended meanwhile
                continue
    except PermissionError:
        log.warning("could not set the engine core's niceness to %d (needs CAP_SYS_NICE); "
                    "it keeps %d", nice, os.getpriority(os.PRIO_PROCESS, 0))
        return False
    return True


def parse_cpus(text: str) -> set[int] | None:
    """'1' or '2,3' -> {1} or {2, 3}; 'auto' -> core_cpus("auto", None); '' -> None."""
    text = text.strip()
    if text == "auto":
        return core_cpus("auto", None)
    try:
        return {int(c) for c in text.split(",") if c.strip()} or None
    except ValueError:
        raise ValueError(f"{PROXY_ENV}: CPU numbers like '1' or '2,3', or 'auto'; got "
                         f"{text!r}") from None


def proxy_keep_off() -> None:
    """In Serve's proxy and controller (cluster/stream_guard.py and Serve's controller
    callback call it at their start): keep off the CPUs named by PROXY_ENV, if set."""
    cpus = parse_cpus(os.environ.get(PROXY_ENV, ""))
    if cpus is not None:
        left = keep_off(cpus)
        log.info("Serve process %d: running on CPUs %s (the engine core has %s)",
                 os.getpid(), sorted(left), sorted(cpus))
