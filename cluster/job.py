"""What the ingress hands the model server (a GenerateJob) and what streams back (JobAccepted
or JobError first, then lists of ChoiceEvent). Plain picklable dataclasses: they cross Ray."""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.slo import SLOSpec
from engine.params import DecodeParams, SamplingParams


@dataclass(frozen=True)
class ChoiceSpec:
    """One engine request: one prompt, one seed (an OpenAI choice)."""

    index: int
    prompt: str | tuple[int, ...]
    sampling: SamplingParams


@dataclass(frozen=True)
class GenerateJob:
    id: str
    choices: tuple[ChoiceSpec, ...]
    decode: DecodeParams
    priority: int = 0
    slo: SLOSpec | None = None
    logprobs: int | None = None  # None: off; 0: the chosen token; 1: and the top token
    prompt_field: str = "prompt"  # what errors about the prompt name ("messages" for chat)


@dataclass(frozen=True)
class JobAccepted:
    num_prompt_tokens: tuple[int, ...]  # per choice


@dataclass(frozen=True)
class JobError:
    """A refusal in OpenAI's error terms (status, message, the offending field)."""

    status: int
    message: str
    param: str | None = None
    type: str = "invalid_request_error"


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top_token_id: int
    top_token: str
    top_logprob: float


@dataclass
class ChoiceStats:
    """One finished choice, for usage and the response's `tandem` object."""

    num_prompt_tokens: int
    num_completion_tokens: int
    seed: int
    num_forwards: int
    forwards_by_mode: dict[str, int] = field(default_factory=dict)
    tokens_by_mode: dict[str, int] = field(default_factory=dict)
    accepted_by_mode: dict[str, int] = field(default_factory=dict)
    drafted_by_mode: dict[str, int] = field(default_factory=dict)


@dataclass
class ChoiceEvent:
    index: int
    text: str  # new text since the last event (stream-safe)
    token_ids: list[int]  # new tokens since the last event
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    stats: ChoiceStats | None = None  # set on the last event of the choice
