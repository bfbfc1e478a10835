"""`tandem generate`: every mode on the shipped model, JSON fields, errors as messages."""

from __future__ import annotations

import json

import pytest

from cluster.cli import main as tandem


@pytest.mark.parametrize("mode", ["ar", "diffusion", "spec_linear", "spec_quadratic"])
def test_generate_json_in_every_mode(capsys: pytest.CaptureFixture[str], mode: str) -> None:
    tandem(["generate", "--mode", mode, "--max-tokens", "24", "--seed", "3", "--json",
            "def parse_args("])
    out = json.loads(capsys.readouterr().out)
    assert {"text", "token_ids", "num_forwards", "num_tokens", "mode"} <= out.keys()
    assert out["mode"] == mode and out["num_tokens"] == len(out["token_ids"]) <= 24
    assert out["seed"] == 3 and out["num_forwards"] >= 1


def test_greedy_ar_continues_the_prompt_with_python(capsys: pytest.CaptureFixture[str]) -> None:
    tandem(["generate", "--mode", "ar", "--max-tokens", "64", "def parse_args("])
    text = capsys.readouterr().out
    assert text.startswith("def parse_args(") and "\n    " in text  # an indented body


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "/no/such/dir", "x"], "checkpoint directory not found"),
    (["--max-tokens", "0", "x"], "max_tokens must be >= 1"),
    (["--mode", "diffusion", "--threshold", "2", "x"], "threshold must be in (0, 1]"),
    (["--max-tokens", "5000", "x"], "exceeds the model's context"),
])
def test_bad_input_is_a_message_not_a_traceback(capsys: pytest.CaptureFixture[str],
                                                args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tandem(["generate", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_block_too_large_for_the_batch_budget_is_refused_not_hung() -> None:
    from engine.engine import EngineConfig, LLMEngine
    from engine.params import DecodeParams
    from engine.request_error import RequestError
    from engine.scheduler import SchedulerConfig

    engine = LLMEngine.from_checkpoint(config=EngineConfig(
        num_blocks=64, scheduler=SchedulerConfig(max_batch_tokens=256)))
    with pytest.raises(RequestError, match="spec_quadratic with block_length 16") as err:
        engine.add_request("x", decode=DecodeParams(mode="spec_quadratic", block_length=16))
    assert err.value.param == "block_length"
    assert not engine.has_unfinished()
