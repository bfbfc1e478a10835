"""Stop rules, applied token by token to what a step emits (so a request can end in the
middle of a block): EOS, stop token ids, max_tokens, stop strings. Each token is also
detokenized here, incrementally (engine/detokenizer.py), which is where stop strings are
found."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from engine.detokenizer import Detokenize, IncrementalDetokenizer
from engine.request import Request, Status


def append_tokens(req: Request, tokens: Sequence[int], eos_ids: Collection[int],
                  detok: Detokenize | None) -> int:
    """Append tokens to req's output until a stop rule fires. Returns how many were kept."""
    s = req.sampling
    text = _detokenizer(req, detok)
    first = len(req.output_ids)  # tokens of earlier steps are never taken back
    for tok in tokens:
        req.output_ids.append(tok)
        if text is not None and (cut := text.push(tok)) is not None:
            # Keep the fewest tokens whose text reaches the stop string's start.
            del req.output_ids[max(first, text.tokens_before(cut)):]
            req.stop_text_len = cut
            _finish(req, "stop")
            break
        if (tok in eos_ids and not s.ignore_eos) or tok in s.stop_token_ids:
            _finish(req, "stop")
            break
        if req.remaining_tokens <= 0:
            _finish(req, "length")
            break
    return len(req.output_ids) - first


def _detokenizer(req: Request, detok: Detokenize | None) -> IncrementalDetokenizer | None:
    if detok is None:
        return None
    if req.detokenizer is None:
        req.detokenizer = IncrementalDetokenizer(detok, req.prompt_ids, req.sampling.stop)
    return req.detokenizer


def _finish(req: Request, reason: str) -> None:
    req.status = Status.FINISHED
    req.finish_reason = reason
    if req.detokenizer is not None:
        req.detokenizer.finish()
