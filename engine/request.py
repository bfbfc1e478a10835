"""A request's life in the engine: its tokens, cache entry, mode state and statistics."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.detokenizer import IncrementalDetokenizer
from engine.kv_cache import CacheEntry
from engine.params import DecodeParams, Mode, SamplingParams
from policies.option import option_of
from policies.request_view import RequestView
from policies.slo import SLO

NO_SLO = SLO()


class Status(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class RequestStats:
    num_forwards: int = 0  # steps this request took part in, prefill included
    num_preemptions: int = 0
    forwards_by_mode: Counter = field(default_factory=Counter)
    tokens_by_mode: Counter = field(default_factory=Counter)
    drafted_by_mode: Counter = field(default_factory=Counter)
    accepted_by_mode: Counter = field(default_factory=Counter)
    first_scheduled_time: float | None = None  # start of the first step that ran it
    # decode forwards per "mode/block" ("diffusion/B@T" where the policy chose the commit
    # threshold T): the blocks the policy chose for it, step by step
    forwards_by_block: Counter = field(default_factory=Counter)
    first_token_time: float | None = None
    token_times: list[float] = field(default_factory=list)


@dataclass(eq=False)  # a request is an identity: `req in running` must not compare fields
class Request:
    id: str
    prompt_ids: list[int]
    sampling: SamplingParams
    decode: DecodeParams
    arrival_time: float = field(default_factory=time.monotonic)
    priority: int = 0
    slo: SLO | None = None  # read by SLO-aware policies
    output_ids: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    finish_reason: str | None = None
    error: str | None = None  # why, when finish_reason is "error"
    stop_text_len: int | None = None  # text cut here when a stop string matched
    detokenizer: IncrementalDetokenizer | None = None  # made at the first output token
    cache: CacheEntry = field(default_factory=CacheEntry)
    mode_state: Any = None  # the running mode's iteration state
    current_mode: Mode | None = None
    current_block: int = 0
    current_threshold: float | None = None  # diffusion: the policy's for this block, if any
    stats: RequestStats = field(default_factory=RequestStats)

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError(f"request {self.id}: empty prompt")

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_pending(self) -> int:
        """Tokens not yet in the cache; 1 (the seed) between steady-state iterations."""
        return self.num_tokens - self.cache.num_cached

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED

    @property
    def remaining_tokens(self) -> int:
        return self.sampling.max_tokens - len(self.output_ids)

    def view(self, is_mid_iteration: bool) -> RequestView:
        """The policy's plain-number picture of this request (is_mid_iteration: its mode
        must continue the iteration it started, the scheduler's to say)."""
        slo = self.slo or NO_SLO
        mode, asked = self.current_mode, self.decode.mode
        return RequestView(
            id=self.id, arrival_s=self.arrival_time, slo=slo,
            max_tokens=self.sampling.max_tokens, num_prompt=len(self.prompt_ids),
            num_output=len(self.output_ids), num_pending=self.num_pending,
            first_token_s=self.stats.first_token_time,
            option=option_of(mode, self.current_block) if mode is not None else None,
            fixed=None if asked is Mode.AUTO else option_of(asked, self.decode.block_length),
            is_mid_iteration=is_mid_iteration,
            allow_lossy=self.decode.allow_lossy or slo.allow_lossy,
            priority=self.priority or slo.priority)
