"""OpenAI request bodies (pydantic, unknown fields refused) with tandem's extensions, and
OpenAI's error shape. Responses are built as plain dicts in cluster/responses.py."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.slo import SLOSpec
from engine.params import Mode

MAX_N = 16
MAX_STOP = 4
MAX_MESSAGES = 4096


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class StreamOptions(_Body):
    include_usage: bool = Field(False, description="A last chunk with usage and no choices.")


class _Common(_Body):
    """Fields both endpoints share: OpenAI's sampling fields and tandem's extensions."""

    model: str | None = Field(None, description="The served model's name (default: it).")
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    frequency_penalty: float = Field(0.0, ge=0.0, le=0.0, description="Not supported (0 only).")
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0, description="Not supported (0 only).")
    # tandem's extensions
    mode: Mode | None = Field(None, description="auto (default), ar, diffusion, spec_linear, "
                              "spec_quadratic.")
    slo: SLOSpec | None = None
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first.")
    allow_lossy: bool = Field(False, description="auto may choose diffusion.")
    block_length: int | None = Field(None, ge=2, le=64)
    threshold: float = Field(0.9, gt=0.0, le=1.0, allow_inf_nan=False,
                             description="Diffusion: commit a position at this confidence.")
    top_k: int = Field(0, ge=0, description="0 = off.")
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"at most {MAX_STOP} non-empty stop strings")
        return stops

    @model_validator(mode="after")
    def _usage_needs_stream(self) -> _Common:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed with stream: true")
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(_Common):
    prompt: Prompt = Field(description="Text, texts, token ids, or lists of token ids.")
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=1, description="Top logprobs per token (<= 1).")
    echo: Literal[False] = Field(False, description="Not supported.")
    best_of: int | None = Field(None, ge=1, le=MAX_N)

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: Prompt) -> Prompt:
        if isinstance(v, str) and not v:
            raise ValueError("empty prompt")
        if isinstance(v, list) and (not v or any(isinstance(p, str | list) and not p
                                                 for p in v)):
            raise ValueError("empty prompt")
        return v

    @model_validator(mode="after")
    def _best_of(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of: only best_of == n is supported")
        return self

    def prompts(self) -> list[str | tuple[int, ...]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [tuple(p)]  # type: ignore[arg-type]
        return [x if isinstance(x, str) else tuple(x) for x in p]  # type: ignore[union-attr]


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs: true")
        return self

    def max_new_tokens(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | int | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def param_of(loc: tuple[Any, ...], message: str = "") -> str | None:
    """'slo.ttft_ms' from a pydantic loc like ('body', 'slo', 'ttft_ms'), union tags dropped;
    for a whole-body check, the field its message starts with ('best_of: ...')."""
    parts = [str(p) for p in loc[1:]
             if isinstance(p, int) or (str(p).isidentifier() and p not in _TYPE_TAGS)]
    if parts:
        return ".".join(parts)
    head = message.removeprefix("Value error, ").split(":", 1)[0]
    return head if head.isidentifier() and ":" in message else None
