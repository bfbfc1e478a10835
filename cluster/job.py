"""What the ingress hands the model server (a GenerateJob) and what streams back (JobAccepted
or JobError first, then lists of ChoiceEvent). Plain picklable dataclasses: they cross Ray.
Events cross as tuples of plain values (`to_wire`): Ray serializes those with msgpack,
without pickling, which is most of the model server's per-token cost under load."""

from __future__ import annotations

from dataclasses import astuple, dataclass, field
from typing import Any

from cluster.slo import SLOSpec
from engine.logprobs import TokenLogprob
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
    # False for a rendered chat: its template already placed the special tokens.
    add_special_tokens: bool = True
    # How often the model server sends this job's tokens (None: its stream_interval_ms). A
    # batch job's caller waits for the whole answer: fewer messages, less CPU per token.
    stream_interval_ms: float | None = None

    def request_id(self, choice: ChoiceSpec) -> str:
        """The engine's request id of one of its choices."""
        return f"{self.id}-{choice.index}"


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
    forwards_by_block: dict[str, int] = field(default_factory=dict)  # "mode/block" -> forwards


@dataclass
class ChoiceEvent:
    index: int
    text: str  # new text since the last event (stream-safe)
    token_ids: list[int]  # new tokens since the last event
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    stats: ChoiceStats | None = None  # set on the last event of the choice

    def to_wire(self) -> tuple[Any, ...]:
        stats = astuple(self.stats) if self.stats is not None else None
        lps = [astuple(lp) for lp in self.logprobs] if self.logprobs is not None else None
        return (self.index, self.text, self.token_ids, lps, self.finish_reason, stats)

    @staticmethod
    def from_wire(t: tuple[Any, ...] | list[Any]) -> ChoiceEvent:
        index, text, token_ids, lps, finish_reason, stats = t
        return ChoiceEvent(index, text, list(token_ids),
                           [TokenLogprob(*lp) for lp in lps] if lps is not None else None,
                           finish_reason, ChoiceStats(*stats) if stats is not None else None)
