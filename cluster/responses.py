"""OpenAI response bodies from the model server's events: stream chunks as events arrive,
or one response at the end; usage, and tandem's own `tandem` object (modes that ran, tokens
per forward, acceptance, seed)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from cluster.job import ChoiceEvent, ChoiceStats, TokenLogprob


def merge_events(events: list[ChoiceEvent]) -> list[ChoiceEvent]:
    """One event per choice: steps coalesced into one item make one chunk each choice."""
    merged: dict[int, ChoiceEvent] = {}
    for ev in events:
        m = merged.get(ev.index)
        if m is None:
            merged[ev.index] = ChoiceEvent(ev.index, ev.text, list(ev.token_ids),
                                           list(ev.logprobs) if ev.logprobs else None,
                                           ev.finish_reason, ev.stats)
            continue
        m.text += ev.text
        m.token_ids += ev.token_ids
        if ev.logprobs:
            m.logprobs = (m.logprobs or []) + list(ev.logprobs)
        if ev.finish_reason is not None:
            m.finish_reason, m.stats = ev.finish_reason, ev.stats
    return list(merged.values())


class ResponseBuilder:
    def __init__(self, kind: str, request_id: str, model: str, num_choices: int, n: int,
                 logprobs: int | None) -> None:
        if kind not in ("completion", "chat"):
            raise ValueError(f"kind must be completion or chat, got {kind!r}")
        self.kind, self.id, self.model, self.n, self.logprobs = (
            kind, request_id, model, n, logprobs)
        self.created = int(time.time())
        self.texts = [""] * num_choices
        self.finish: list[str | None] = [None] * num_choices
        self.stats: list[ChoiceStats | None] = [None] * num_choices
        self.lps: list[list[TokenLogprob]] = [[] for _ in range(num_choices)]

    @property
    def object(self) -> str:
        return "text_completion" if self.kind == "completion" else "chat.completion"

    def _envelope(self, chunk: bool) -> dict[str, Any]:
        obj = self.object + (".chunk" if chunk and self.kind == "chat" else "")
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    # --- events in -------------------------------------------------------------------------

    def add(self, events: list[ChoiceEvent]) -> list[dict[str, Any]]:
        """Record events; return the stream chunks they make."""
        chunks = []
        for ev in merge_events(events):
            i = ev.index
            offset = sum(len(t.token) for t in self.lps[i])  # text_offset of its first token
            self.texts[i] += ev.text
            if ev.logprobs:
                self.lps[i].extend(ev.logprobs)
            if ev.finish_reason is not None:
                self.finish[i], self.stats[i] = ev.finish_reason, ev.stats
            if ev.text or ev.finish_reason is not None or ev.logprobs:
                chunks.append(self._chunk(ev, offset))
        return chunks

    def _chunk(self, ev: ChoiceEvent, offset: int) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": ev.index, "finish_reason": ev.finish_reason}
        lps = self._logprobs(ev.logprobs or [], offset) if self.logprobs is not None else None
        if self.kind == "completion":
            choice.update(text=ev.text, logprobs=lps)
        else:
            choice.update(delta={"content": ev.text} if ev.text else {}, logprobs=lps)
        return {**self._envelope(True), "choices": [choice]}

    def role_chunks(self) -> list[dict[str, Any]]:
        """Chat streams open each choice with the assistant role."""
        if self.kind != "chat":
            return []
        return [{**self._envelope(True), "choices": [
            {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
             "finish_reason": None}]} for i in range(len(self.texts))]

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._envelope(True), "choices": [], "usage": self.usage(),
                "tandem": self.tandem()}

    # --- the whole response ----------------------------------------------------------------

    def response(self) -> dict[str, Any]:
        choices = []
        for i, text in enumerate(self.texts):
            lps = self._logprobs(self.lps[i], 0) if self.logprobs is not None else None
            c: dict[str, Any] = {"index": i, "finish_reason": self.finish[i], "logprobs": lps}
            if self.kind == "completion":
                c["text"] = text
            else:
                c["message"] = {"role": "assistant", "content": text}
            choices.append(c)
        return {**self._envelope(False), "choices": choices, "usage": self.usage(),
                "tandem": self.tandem()}

    def usage(self) -> dict[str, int]:
        done = [s for s in self.stats if s is not None]
        # The prompt counts once per prompt, not once per choice (as OpenAI counts it).
        prompt = sum(s.num_prompt_tokens for i, s in enumerate(self.stats)
                     if s is not None and i % self.n == 0)
        completion = sum(s.num_completion_tokens for s in done)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def tandem(self) -> dict[str, Any]:
        done = [s for s in self.stats if s is not None]
        forwards: Counter = Counter()
        accepted: Counter = Counter()
        drafted: Counter = Counter()
        tokens: Counter = Counter()
        blocks: Counter = Counter()
        for s in done:
            forwards.update(s.forwards_by_mode)
            accepted.update(s.accepted_by_mode)
            drafted.update(s.drafted_by_mode)
            tokens.update(s.tokens_by_mode)
            blocks.update(s.forwards_by_block)
        num_tokens = sum(s.num_completion_tokens for s in done)
        num_forwards = sum(s.num_forwards for s in done)
        out = {"modes": dict(forwards), "tokens_by_mode": dict(tokens),
               "tokens_per_forward": round(num_tokens / max(1, num_forwards), 4),
               "accepted_by_mode": dict(accepted), "drafted_by_mode": dict(drafted),
               "forwards_by_block": dict(blocks),
               "seed": done[0].seed if done else None}
        if len(self.stats) > 1:
            out["seeds"] = [s.seed if s else None for s in self.stats]
        return out

    # --- logprobs ----------------------------------------------------------------------------

    def _logprobs(self, lps: list[TokenLogprob], offset: int) -> dict[str, Any]:
        if self.kind == "chat":
            return {"content": [self._chat_lp(t) for t in lps]}
        tops = []
        for t in lps:
            top = {t.token: t.logprob}
            if self.logprobs:
                top[t.top_token] = t.top_logprob
            tops.append(top)
        offsets, pos = [], offset
        for t in lps:
            offsets.append(pos)
            pos += len(t.token)
        return {"tokens": [t.token for t in lps], "token_logprobs": [t.logprob for t in lps],
                "top_logprobs": tops, "text_offset": offsets}

    def _chat_lp(self, t: TokenLogprob) -> dict[str, Any]:
        top = ([{"token": t.top_token, "logprob": t.top_logprob,
                 "bytes": list(t.top_token.encode())}] if self.logprobs else [])
        return {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                "top_logprobs": top}
