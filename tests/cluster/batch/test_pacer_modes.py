"""A batch job behind its schedule switches to faster modes, end to end below Ray: the pacer's
steering goes through the adapter (the HTTP API's validation, the job's SLO and mode) into
the batch config's real engine and SLO scheduler (ray_configs/batch.yaml, CPU, tandem-tiny),
and the modes that ran are read from the engine's outputs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cluster.batch.adapter import Adapter, Steering
from cluster.batch.estimate import fastest_option
from cluster.batch.lines import BatchLine
from cluster.batch.pacer import Pacer
from cluster.config import load_config
from cluster.job import GenerateJob
from cluster.job_admission import add_job
from cluster.model_server import DEFAULT_PROFILE, build_engine
from cluster.serve_cmd import read_yaml
from policies.profile import Profile
from tests.cluster.batch.test_pacer import Clock, run

CONFIG = Path(__file__).resolve().parents[3] / "ray_configs" / "batch.yaml"
PROMPTS = ["def parse_args(", "import os\n", "class Stack:\n", "for i in range("]
MAX_TOKENS = 24


def modes_run(adapter: Adapter, engine, steer: Steering) -> Counter:
    """Output tokens by mode of four requests sent with this steering."""
    for i, prompt in enumerate(PROMPTS):
        body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.8, "seed": i,
                "ignore_eos": True}
        job, _ = adapter.prepare(BatchLine(i + 1, f"q{i}", "/v1/completions", body), steer)
        assert isinstance(job, GenerateJob) and job.priority == -1
        assert not isinstance(add_job(engine, job), Exception)
    tokens: Counter = Counter()
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                assert len(out.token_ids) == MAX_TOKENS
                tokens.update(out.tokens_by_mode)
    del tokens["prefill"]  # the first token of each
    return tokens


def test_a_job_behind_schedule_runs_faster_modes() -> None:
    config = load_config(read_yaml(CONFIG, None)[0]["args"])
    engine, adapter = build_engine(config), Adapter(config, None)
    fast = fastest_option(Profile.load(DEFAULT_PROFILE), 4)  # as `tandem batch` picks it
    clock = Clock()
    pacer = Pacer(60.0, 100 * MAX_TOKENS, window=4, choose=lambda _: fast, clock=clock)
    run(pacer, clock, 60, 5)  # 60 tokens/s: 2400 in 54 s needs ~44
    pacer.steer()
    ahead = Steering(-1, pacer.deadline_ms(MAX_TOKENS), pacer.option())
    assert modes_run(adapter, engine, ahead).keys() == {"ar"}  # least work per token
    run(pacer, clock, 15, 10)  # the machine slowed to a third: behind, at its cap (4)
    pacer.steer()
    behind = Steering(-1, pacer.deadline_ms(MAX_TOKENS), pacer.option())
    tokens = modes_run(adapter, engine, behind)
    assert tokens.keys() == {fast.mode} and tokens[fast.mode] == 4 * (MAX_TOKENS - 1)
