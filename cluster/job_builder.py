"""OpenAI request body -> GenerateJob: the one place HTTP fields become engine dataclasses."""

from __future__ import annotations

import secrets

from cluster.config import TandemConfig
from cluster.job import ChoiceSpec, GenerateJob
from cluster.openai_protocol import ChatCompletionRequest, CompletionRequest, _Common, param_of
from engine.params import DecodeParams, SamplingParams
from models.chat_template import ChatTemplateError, chat_template_of
from models.errors import CheckpointError


class BadRequest(Exception):
    """A request the ingress refuses itself (status, message, the field)."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 type_: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = (
            status, message, param, type_, code)


def invalid_body(errors: list[dict]) -> BadRequest:
    """The 400 for a body that fails validation; errors as FastAPI gives them (loc starts
    with "body"). The HTTP ingress and batch jobs answer the same."""
    err = errors[0]
    if err["type"] == "json_invalid":
        return BadRequest(400, "the body is not valid JSON: "
                               f"{err.get('ctx', {}).get('error', '')}", None, code="json_invalid")
    param = param_of(tuple(err["loc"]), err["msg"])
    msg = err["msg"].removeprefix("Value error, ")
    message = msg if param is None or msg.startswith(param) else f"{param}: {msg}"
    return BadRequest(400, message, param, code=err["type"])


def check_model(model: str | None, served: str) -> None:
    """404 for a body naming another model than the one served."""
    if model is not None and model != served:
        raise BadRequest(404, f"The model `{model}` does not exist (this server serves "
                              f"`{served}`).", "model", code="model_not_found")


def _decode(body: _Common, config: TandemConfig) -> DecodeParams:
    mode = body.mode or config.model.default_mode
    if mode not in config.model.allowed_modes:
        allowed = ", ".join(m.value for m in config.model.allowed_modes)
        raise BadRequest(400, f"mode: {mode.value!r} is not served here (allowed: {allowed})",
                         "mode")
    try:
        return DecodeParams(mode=mode, block_length=body.block_length,
                            threshold=body.threshold, allow_lossy=body.allow_lossy)
    except ValueError as err:
        raise BadRequest(400, str(err), str(err).split(" ", 1)[0]) from None


def _choices(body: _Common, prompts: list[str | tuple[int, ...]], max_tokens: int,
             extra_stop: tuple[str, ...] = ()) -> tuple[ChoiceSpec, ...]:
    base = body.seed if body.seed is not None else None
    stops = tuple(body.stop or ()) + extra_stop  # the validator made it a list
    out = []
    for p, prompt in enumerate(prompts):
        for i in range(body.n):
            index = p * body.n + i
            seed = secrets.randbits(63) if base is None else (base + i) % 2**63
            sampling = SamplingParams(
                max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                top_k=body.top_k, seed=seed, stop=stops, ignore_eos=body.ignore_eos)
            out.append(ChoiceSpec(index, prompt, sampling))
    return tuple(out)


def completion_job(body: CompletionRequest, config: TandemConfig, job_id: str) -> GenerateJob:
    return GenerateJob(
        id=job_id, choices=_choices(body, body.prompts(), body.max_tokens),
        decode=_decode(body, config), priority=body.priority,
        slo=body.slo or config.model.default_slo, logprobs=body.logprobs)


def chat_prompt(body: ChatCompletionRequest, config: TandemConfig) -> tuple[str, tuple[str, ...]]:
    """The checkpoint's chat template over the messages, and its extra stop strings."""
    try:
        template = chat_template_of(config.model.model_dir)
    except CheckpointError as err:
        raise BadRequest(400, f"messages: this model's chat template cannot be used ({err})",
                         "messages") from None
    if template is None:
        raise BadRequest(400, "messages: this model has no chat template (no chat_template in "
                         "tokenizer_config.json, no chat_template.jinja); use /v1/completions",
                         "messages")
    try:
        text = template.render([{"role": m.role, "content": m.text} for m in body.messages])
    except ChatTemplateError as err:
        raise BadRequest(400, str(err), "messages") from None
    return text, template.stop


def chat_job(body: ChatCompletionRequest, config: TandemConfig, job_id: str) -> GenerateJob:
    max_tokens = body.max_new_tokens(config.model.default_max_tokens)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    prompt, stop = chat_prompt(body, config)
    return GenerateJob(
        id=job_id, choices=_choices(body, [prompt], max_tokens, stop),
        decode=_decode(body, config), priority=body.priority,
        slo=body.slo or config.model.default_slo, logprobs=logprobs,
        prompt_field="messages", add_special_tokens=False)
