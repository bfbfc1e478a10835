"""CPU time of the serving processes, read from /proc: the Serve proxy, each deployment's
replicas and their child processes (an engine core), Ray's own daemons, and this process.

`utime + stime` of /proc/PID/stat counts every thread of a process; a child's time is read
from its own entry while it runs (a dead child's is lost, so sample before it exits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S  # fields 14, 15 of stat(5)


def main_thread_seconds(pid: int) -> tuple[float, float]:
    """(on a CPU, waiting for one while runnable) of pid's main thread, in seconds: the
    first two fields of /proc/PID/task/PID/schedstat; zeros if it is gone. The engine runs
    on that thread, both in the engine core and in the bench's engine-alone loop; what is
    left of a run's wall time is the thread blocked (the core waiting for work)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            on_cpu, waiting = f.read().split()[:2]
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    out[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    return out


def descendants(pid: int, parents: dict[int, int]) -> list[int]:
    kids: dict[int, list[int]] = {}
    for child, parent in parents.items():
        kids.setdefault(parent, []).append(child)
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


@dataclass(frozen=True)
class Group:
    """A named set of processes whose CPU is summed (a replica and its children)."""

    name: str
    pids: tuple[int, ...]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)


def serve_groups(app: str) -> list[Group]:
    """The proxy, the app's replicas (each with its children, e.g. an engine core), the
    controller, the rest of this Ray session (raylet, GCS, idle workers) and this process
    (the client and the in-process engine). Ray workers name themselves `ray::<actor>`;
    only this session's are read (descendants of its raylet: other Ray instances share
    the machine)."""
    import ray

    node = ray._private.worker._global_node
    parents = _parents()
    daemons = [info.process.pid for infos in node.all_processes.values() for info in infos
               if info.process is not None]
    groups: dict[str, list[int]] = {}
    seen: set[int] = set()
    for raylet in [info.process.pid for info in node.all_processes.get("raylet", [])]:
        for pid in descendants(raylet, parents):
            title = _title(pid)
            if title.startswith("ray::ProxyActor"):
                name = "proxy"
            elif title.startswith(prefix := f"ray::ServeReplica:{app}:"):
                name = title[len(prefix):].split(".")[0].split(" ")[0]
            elif title.startswith("ray::ServeController"):
                name = "controller"
            else:
                continue
            for p in [pid, *descendants(pid, parents)]:
                part = "engine core" if "cluster.engine_core" in _title(p) else name
                groups.setdefault(part, []).append(p)
                seen.add(p)
    groups["ray daemons"] = [p for p in daemons if p not in seen]
    groups["bench (client)"] = [os.getpid()]
    return [Group(name, tuple(pids)) for name, pids in groups.items()]


def snapshot(groups: list[Group]) -> dict[str, float]:
    return {g.name: g.cpu() for g in groups}
