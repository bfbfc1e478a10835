"""`tandem generate --disaggregated --draft-tp 1 --verify-tp 1` prints AR's tokens with the
fused command's --json fields plus forwards per pool; bad combinations get a message."""

from __future__ import annotations

import json

import pytest

from cluster.generate_cmd import main

ARGS = ["def fib(n):", "--json", "--temperature", "0.8", "--seed", "3", "--max-tokens", "16"]


def _run(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    main([*ARGS, *extra])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_disaggregated_generate_prints_ar_tokens_and_pool_forwards(ray_session, capsys) -> None:
    fused = _run(capsys, "--mode", "ar")
    disagg = _run(capsys, "--disaggregated", "--draft-tp", "1", "--verify-tp", "1")
    assert disagg["token_ids"] == fused["token_ids"] and disagg["text"] == fused["text"]
    assert disagg["mode"] == "spec_pipelined"
    assert set(fused) | {"pool_forwards"} == set(disagg)
    forwards = disagg["pool_forwards"]
    assert forwards["verify"] >= 1 and forwards["draft"] >= 1
    assert forwards["verify"] < disagg["num_tokens"]  # some drafts were accepted


def test_bad_disaggregated_arguments_name_the_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*ARGS, "--disaggregated", "--tp", "2"])
    assert exited.value.code == 2
    assert "--tp: give --verify-tp with --disaggregated" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main([*ARGS, "--mode", "spec_pipelined"])
    assert exited.value.code == 2
    assert "spec_pipelined needs a deployment with a draft pool" in capsys.readouterr().err
