"""HTTP bodies -> jobs, the chat template, response bodies: plain Python, no Ray."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster.config import load_config
from cluster.job import ChoiceEvent, ChoiceStats, TokenLogprob
from cluster.job_builder import BadRequest, chat_job, completion_job
from cluster.openai_protocol import ChatCompletionRequest, CompletionRequest, param_of
from cluster.responses import ResponseBuilder
from engine.params import Mode
from models.chat_template import PYTHON_CHAT_STOP, ChatTemplate
from models.checkpoint import DEFAULT_MODEL_DIR

CONFIG = load_config({})


def _param(exc: ValidationError) -> str | None:
    err = exc.errors()[0]
    return param_of(("body", *err["loc"]), err["msg"])


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "foo": 1}, "foo"),
    ({"prompt": "x", "mode": "turbo"}, "mode"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": "many"}, "max_tokens"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": "x", "slo": {"ttft_ms": -3}}, "slo.ttft_ms"),
    ({"prompt": "x", "slo": {"deadline_ms": 1e12}}, "slo.deadline_ms"),
    ({"prompt": "x", "slo": {"tpot": 3}}, "slo.tpot"),
    ({"prompt": "x", "block_length": 1}, "block_length"),
    ({"prompt": "x", "temperature": float("nan")}, "temperature"),
    ({"prompt": "x", "logprobs": 5}, "logprobs"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "stop": ["a", ""]}, "stop"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
])
def test_completion_body_errors_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(ValidationError) as err:
        CompletionRequest.model_validate(body)
    assert _param(err.value) == param


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 1}, "top_logprobs"),
])
def test_chat_body_errors_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate(body)
    assert _param(err.value) == param


def test_completion_job_fans_out_prompts_and_seeds() -> None:
    body = CompletionRequest.model_validate(
        {"prompt": ["a", "b"], "n": 2, "seed": 7, "max_tokens": 5, "temperature": 0.5,
         "stop": "\n\n", "mode": "spec_linear", "block_length": 4, "slo": {"ttft_ms": 100}})
    job = completion_job(body, CONFIG, "cmpl-1")
    assert [c.index for c in job.choices] == [0, 1, 2, 3]
    assert [c.prompt for c in job.choices] == ["a", "a", "b", "b"]
    assert [c.sampling.seed for c in job.choices] == [7, 8, 7, 8]
    assert job.choices[0].sampling.stop == ("\n\n",)
    assert job.decode.mode is Mode.SPEC_LINEAR and job.decode.block_length == 4
    assert job.slo.ttft_ms == 100
    ids = CompletionRequest.model_validate({"prompt": [5, 6, 7]})
    assert completion_job(ids, CONFIG, "c").choices[0].prompt == (5, 6, 7)


def test_modes_outside_the_config_are_refused() -> None:
    config = load_config({"model": {"allowed_modes": ["ar", "auto"]}})
    body = CompletionRequest.model_validate({"prompt": "x", "mode": "diffusion"})
    with pytest.raises(BadRequest) as err:
        completion_job(body, config, "c")
    assert err.value.param == "mode" and err.value.status == 400


def test_chat_template_renders_a_python_comment_conversation() -> None:
    template = ChatTemplate.load(DEFAULT_MODEL_DIR)  # tandem-tiny's tokenizer_config.json
    turns = [("system", "Be brief."), ("user", "Parse args.\nReturn it."),
             ("assistant", "def f():\n    pass"), ("user", "Again")]
    text = template.render([{"role": r, "content": c} for r, c in turns])
    assert text == ("# system: Be brief.\n# user: Parse args.\n#   Return it.\n"
                    "# assistant:\ndef f():\n    pass\n# user: Again\n# assistant:\n")
    body = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
         "logprobs": True, "top_logprobs": 1})
    job = chat_job(body, CONFIG, "chat-1")
    assert job.choices[0].prompt == "# user: hi\n# assistant:\n"
    assert job.logprobs == 1 and job.prompt_field == "messages"
    assert set(PYTHON_CHAT_STOP) <= set(job.choices[0].sampling.stop)
    assert not job.add_special_tokens


def _stats(n: int, seed: int) -> ChoiceStats:
    return ChoiceStats(5, n, seed, 4, {"prefill": 1, "ar": 3}, {"prefill": 1, "ar": n - 1},
                       {"ar": 0}, {"ar": 0}, {"ar/1": 2, "spec_quadratic/3": 1})


def test_response_builder_usage_stream_and_tandem_object() -> None:
    b = ResponseBuilder("completion", "cmpl-1", "m", num_choices=2, n=2, logprobs=1)
    lp = TokenLogprob(9, "ab", -0.5, 8, "x", -0.1)
    chunks = b.add([ChoiceEvent(0, "ab", [9], [lp]), ChoiceEvent(1, "", [])])
    assert len(chunks) == 1 and chunks[0]["choices"][0]["text"] == "ab"
    assert chunks[0]["choices"][0]["logprobs"]["top_logprobs"] == [{"ab": -0.5, "x": -0.1}]
    b.add([ChoiceEvent(0, "c", [3], [TokenLogprob(3, "c", -1.0, 3, "c", -1.0)], "length",
                       _stats(2, 11)),
           ChoiceEvent(1, "z", [4], None, "stop", _stats(4, 12))])
    resp = b.response()
    assert [c["text"] for c in resp["choices"]] == ["abc", "z"]
    assert resp["choices"][0]["logprobs"]["text_offset"] == [0, 2]
    assert resp["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    t = resp["tandem"]
    assert t["modes"] == {"prefill": 2, "ar": 6} and t["seeds"] == [11, 12]
    assert t["tokens_per_forward"] == 0.75
    assert t["forwards_by_block"] == {"ar/1": 4, "spec_quadratic/3": 2}
    usage = b.usage_chunk()
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6


def test_chat_chunks_open_with_the_role() -> None:
    b = ResponseBuilder("chat", "chat-1", "m", num_choices=1, n=1, logprobs=None)
    (role,) = b.role_chunks()
    assert role["object"] == "chat.completion.chunk"
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    (chunk,) = b.add([ChoiceEvent(0, "hi", [1], None, "stop", _stats(1, 3))])
    assert chunk["choices"][0]["delta"] == {"content": "hi"}
    assert b.response()["choices"][0]["message"] == {"role": "assistant", "content": "hi"}


def test_coalesced_steps_make_one_chunk_per_choice() -> None:
    b = ResponseBuilder("completion", "cmpl-2", "m", num_choices=2, n=2, logprobs=None)
    chunks = b.add([ChoiceEvent(0, "a", [1]), ChoiceEvent(1, "x", [7]), ChoiceEvent(0, "b", [2]),
                    ChoiceEvent(0, "c", [3], None, "length", _stats(3, 1))])
    assert [(c["choices"][0]["index"], c["choices"][0]["text"], c["choices"][0]["finish_reason"])
            for c in chunks] == [(0, "abc", "length"), (1, "x", None)]
