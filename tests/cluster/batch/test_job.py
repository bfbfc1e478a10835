"""`tandem batch` end to end. The SIGKILL test runs the command in its own process against
a metered model-server app deployed once for this module (`--address --app`, so each run
does not pay a replica start); the broken-lines test runs it in this process on its own
replicas (the default path: it deploys them, runs, removes them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.cluster.batch.test_lines import BROKEN, write_mixed

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
PROMPTS = ["def parse_args(", "import os\n", "class Stack:\n", "for i in range(",
           "    return self.", "def __init__(self", "with open(", "if __name__ =="]
MODES = ["ar", "spec_linear", "spec_quadratic", "diffusion", "auto"]


APP = "batch-test"
CONFIG = str(ROOT / "ray_configs" / "batch.yaml")


@pytest.fixture(scope="module")
def address(ray_session) -> str:
    from bench import deploy
    from cluster.batch import replicas
    from cluster.batch.job import BatchJob  # noqa: F401 - the module the tests drive
    from cluster.config import load_config
    from cluster.serve_cmd import read_yaml

    config = load_config(read_yaml(Path(CONFIG), None)[0]["args"])
    replicas.start_own(config, app=APP)
    yield ray_session.get_runtime_context().gcs_address
    deploy.shutdown_serve()  # the jobs' Serve runs without HTTP: later modules start their own


def cli(*args: str, address: str) -> list[str]:
    return [sys.executable, "-m", "cluster.cli", "batch", *args, "--address", address,
            "--app", APP, "--config", CONFIG, "--max-in-flight", "32", "--no-progress"]


def run_here(*args: str) -> dict:
    """The command in this process (Ray already up: it joins, and removes what it starts)."""
    from cluster.batch.cmd import parse_args
    from cluster.batch.job import BatchJob

    job = BatchJob(parse_args([*args, "--no-progress", "--json"]), time.monotonic())
    assert job.run() == 0
    assert job.summary is not None
    return job.summary


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}


def run(*args: str, address: str) -> dict:
    proc = subprocess.run(cli(*args, "--json", address=address), env=env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def texts(path: Path) -> dict[str, list[str]]:
    out = {}
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        assert obj["custom_id"] not in out, f"{obj['custom_id']} twice"
        assert obj["response"]["status_code"] == 200 and obj["error"] is None
        out[obj["custom_id"]] = [c["text"] for c in obj["response"]["body"]["choices"]]
    return out


def test_sigkill_half_way_then_rerun_gives_each_id_once_equal_to_a_clean_run(
        tmp_path: Path, address: str) -> None:
    inp = tmp_path / "in.jsonl"
    with open(inp, "w") as f:
        for i in range(200):  # seeded, T = 0.8, every mode, tiny max_tokens
            body = {"prompt": PROMPTS[i % 8], "max_tokens": 4, "temperature": 0.8,
                    "seed": i, "mode": MODES[i % 5]}
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                "url": "/v1/completions", "body": body}) + "\n")
    clean = run_here("--input", str(inp), "--output", str(tmp_path / "clean.jsonl"),
                     "--app", APP, "--config", CONFIG, "--max-in-flight", "32")
    assert clean["done"] == 200

    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(cli("--input", str(inp), "--output", str(out), address=address),
                            env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while not out.exists() or len(out.read_bytes().splitlines()) < 80:
            assert proc.poll() is None, "the job ended before it was killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    written = len(out.read_bytes().splitlines())
    assert 80 <= written < 200, written

    resumed = run("--input", str(inp), "--output", str(out), address=address)
    assert resumed["skipped"] >= 80 and resumed["done"] == 200 - resumed["skipped"]
    ids = Counter(json.loads(x)["custom_id"] for x in out.read_text().splitlines())
    assert set(ids) == {f"r{i}" for i in range(200)} and set(ids.values()) == {1}
    assert texts(out) == texts(tmp_path / "clean.jsonl")


def test_broken_lines_are_listed_and_the_rest_finishes(tmp_path: Path, address: str) -> None:
    inp = write_mixed(tmp_path / "in.jsonl")
    s = run_here("--input", str(inp), "--output", str(tmp_path / "out.jsonl"), "--errors",
                 str(tmp_path / "bad.jsonl"))  # on its own replicas (ray_configs/batch.yaml)
    assert (s["done"], s["errors"], s["refused"], s["failed"]) == (95, 5, 0, 0)
    assert len(texts(tmp_path / "out.jsonl")) == 95
    bad = [json.loads(x) for x in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert [b["line"] for b in bad] == sorted(BROKEN)
    assert all(b["reason"].startswith(BROKEN[b["line"]][1]) for b in bad)
