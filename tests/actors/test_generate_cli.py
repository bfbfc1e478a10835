"""`tandem generate --tp 2` prints the text of `--tp 1` (one shard-worker actor).

The two commands join the session's Ray cluster through RAY_ADDRESS (a Ray of their own
would cost ~10 s each here) and run side by side: 2 + 1 of its 4 CPUs. Run without
RAY_ADDRESS, the command starts and stops a local Ray itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tp2_prints_the_text_of_tp1(ray_session) -> None:
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    args = [sys.executable, "-m", "cluster.cli", "generate", "def fib(n):", "--json",
            "--mode", "spec_linear", "--temperature", "0.8", "--seed", "3",
            "--max-tokens", "16"]
    procs = {tp: subprocess.Popen([*args, "--tp", str(tp)], cwd=REPO, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for tp in (2, 1)}
    results = {}
    for tp, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"--tp {tp} exited {proc.returncode}:\n{err[-2000:]}"
        results[tp] = json.loads(out.strip().splitlines()[-1])
    assert results[2]["text"] == results[1]["text"]
    assert results[2]["token_ids"] == results[1]["token_ids"]
    assert results[2]["num_tokens"] == 16 and results[2]["seed"] == 3
