"""The bench's per-process CPU reader against a real child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.proc_cpu import Group, _parents, cpu_seconds, descendants


def test_a_busy_child_is_found_and_its_cpu_counted() -> None:
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        assert child.pid in descendants(os.getpid(), _parents())
        group = Group("child", (child.pid,))
        before = group.cpu()
        time.sleep(1.0)
        assert group.cpu() - before > 0.05  # it burns CPU (shared box: not a full second)
    finally:
        child.kill()
        child.wait()
    assert cpu_seconds(child.pid) == 0.0  # gone
