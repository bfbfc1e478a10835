"""Stop rules, applied token by token to what a step emits (so a request can end in the
middle of a block): EOS, stop token ids, max_tokens, stop strings."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from engine.request import Request, Status

Detokenize = Callable[[Sequence[int]], str]


def append_tokens(req: Request, tokens: Sequence[int], eos_ids: Collection[int],
                  detok: Detokenize | None) -> int:
    """Append tokens to req's output until a stop rule fires. Returns how many were kept."""
    s = req.sampling
    kept = 0
    for tok in tokens:
        req.output_ids.append(tok)
        kept += 1
        if (tok in eos_ids and not s.ignore_eos) or tok in s.stop_token_ids:
            _finish(req, "stop")
            return kept
        if req.remaining_tokens <= 0:
            _finish(req, "length")
            break
    if s.stop and detok is not None and kept:
        kept -= _cut_at_stop_string(req, detok, kept)
    return kept


def _cut_at_stop_string(req: Request, detok: Detokenize, num_new: int) -> int:
    """If a stop string appears in the text, end the request there. Returns tokens dropped."""
    text = detok(req.output_ids)
    # Only the new tokens can complete a match: look from a little before them.
    before = len(detok(req.output_ids[:-num_new])) if num_new < len(req.output_ids) else 0
    window = max(0, before - max(len(x) for x in req.sampling.stop))
    hits = [i for i in (text.find(x, window) for x in req.sampling.stop) if i >= 0]
    if not hits:
        return 0
    cut = min(hits)
    # Keep the fewest tokens whose text reaches the stop string's start.
    keep = len(req.output_ids)
    while keep > 0 and len(detok(req.output_ids[:keep - 1])) >= cut:
        keep -= 1
    dropped = len(req.output_ids) - keep
    del req.output_ids[keep:]
    req.stop_text_len = cut
    _finish(req, "stop")
    return dropped


def _finish(req: Request, reason: str) -> None:
    req.status = Status.FINISHED
    req.finish_reason = reason


def final_text(req: Request, detok: Detokenize) -> str:
    text = detok(req.output_ids)
    return text if req.stop_text_len is None else text[: req.stop_text_len]


def stable_text(req: Request, detok: Detokenize) -> str:
    """Text safe to stream now: without a trailing partial UTF-8 character or a tail that
    may still grow into a stop string."""
    text = final_text(req, detok)
    if req.is_finished:
        return text
    text = text.rstrip("\ufffd")
    hold = 0
    for stop in req.sampling.stop:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                hold = max(hold, n)
                break
    return text[: len(text) - hold]
