"""Incremental detokenization: each new token costs a decode of a few tokens, never of the
whole output, and stop strings are looked for in the text's tail only.

The offset scheme (vLLM's `detokenize_incrementally`): decode the window of ids from
`prefix_offset` twice, without and with the ids after `read_offset`; the new text is what
the second adds to the first. While the window ends in the middle of a UTF-8 character the
decoder yields U+FFFD, and nothing is released until a later token completes it; then the
window moves up. A few prompt ids lead the window so that tokenizers that drop a leading
space at the start of a decode (SentencePiece's metaspace) still see the word boundary.

Released text goes out once (`take_delta`) and is kept in pieces for the final text. A tail
that may still grow into a stop string is held back until it cannot (or the request ends).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence

Detokenize = Callable[[Sequence[int]], str]

PROMPT_CONTEXT = 5  # prompt ids ahead of the first output id in the decode window
REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, decode: Detokenize, prompt_ids: Sequence[int],
                 stop: Sequence[str] = ()) -> None:
        self.decode, self.stop = decode, tuple(stop)
        self._window = list(prompt_ids[-PROMPT_CONTEXT:])  # ids from prefix_offset on
        self._read = len(self._window)  # window ids [0, _read) are already text
        self._prefix_len = len(decode(self._window)) if self._window else 0
        self._pieces: list[str] = []  # all released text
        self._unsent: list[str] = []  # released, not yet taken
        self._held = ""  # text after the released part: a possible stop-string start
        self.num_chars = 0  # released + held
        self.ends: list[int] = []  # num_chars after each output token
        self.stop_at: int | None = None  # where a stop string begins, once one matched

    def push(self, token: int) -> int | None:
        """Add one output token. Returns the text position where a stop string begins if
        this token completed one (nothing after it is released), else None."""
        if self.stop_at is not None:
            raise RuntimeError("push after a stop string matched")
        delta = self._decode_next(token)
        self.num_chars += len(delta)
        self.ends.append(self.num_chars)
        if not self.stop:
            if delta:
                self._release(delta)
            return None
        start = self.num_chars - len(self._held) - len(delta)  # where _held begins
        self._held += delta
        hits = [i for i in (self._held.find(s) for s in self.stop) if i >= 0]
        if hits:
            cut = min(hits)
            self._release(self._held[:cut])
            self._held = ""
            self.stop_at = start + cut
            return self.stop_at
        keep = self._stop_prefix_len(self._held)
        if keep < len(self._held):
            self._release(self._held[:len(self._held) - keep])
            self._held = self._held[len(self._held) - keep:]
        return None

    def tokens_before(self, position: int) -> int:
        """The fewest output tokens whose text reaches `position` characters."""
        return 0 if position <= 0 else bisect_left(self.ends, position) + 1

    def take_delta(self) -> str:
        """Released text not yet taken."""
        text = "".join(self._unsent)
        self._unsent.clear()
        return text

    def finish(self) -> None:
        """The request ended: release what was held, and a trailing partial character as
        the decoder renders it."""
        if self.stop_at is None:
            rest = self.decode(self._window)[self._prefix_len:] if self._read < len(
                self._window) else ""
            self._release(self._held + rest)
            self._held = ""
            self._read = len(self._window)

    @property
    def text(self) -> str:
        """All released text (joined on demand: call it once, at the end)."""
        return "".join(self._pieces)

    # --- internals -----------------------------------------------------------------------

    def _decode_next(self, token: int) -> str:
        self._window.append(token)
        text = self.decode(self._window)
        if len(text) <= self._prefix_len or text.endswith(REPLACEMENT):
            return ""  # no new character yet (or one still incomplete)
        delta = text[self._prefix_len:]
        # Move the window up: the ids already read become its new prefix.
        del self._window[:self._read]
        self._read = len(self._window)
        self._prefix_len = len(self.decode(self._window))
        return delta

    def _release(self, text: str) -> None:
        if text:
            self._pieces.append(text)
            self._unsent.append(text)

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest tail of text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
