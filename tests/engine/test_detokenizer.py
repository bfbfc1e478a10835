"""Incremental detokenization: the streamed text equals the whole decode, multi-byte
characters split across tokens come out whole, stop strings cut where they begin, and a
token's cost does not grow with the length of the output."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from engine.detokenizer import IncrementalDetokenizer
from engine.params import DecodeParams, SamplingParams
from engine.request import Request
from engine.stop import append_tokens

TEXT = "héllo wörld 日本語 🎉 ok, naïve café → ∑ done\n"


def stream(codec, ids: Sequence[int], stop: Sequence[str] = ()) -> tuple[list[str], object]:
    tx = IncrementalDetokenizer(codec.decode, codec.encode("def f():"), stop)
    deltas = []
    for tok in ids:
        if tx.push(tok) is not None:
            break
        deltas.append(tx.take_delta())
    tx.finish()
    deltas.append(tx.take_delta())
    return deltas, tx


def test_the_streamed_text_is_the_whole_decode_with_characters_intact(codec) -> None:
    ids = codec.encode(TEXT * 3)
    assert any(codec.decode([t]) == "\ufffd" for t in ids)  # characters do split across ids
    deltas, tx = stream(codec, ids)
    assert "".join(deltas) == codec.decode(ids) == tx.text
    assert not any("\ufffd" in d for d in deltas)


def test_a_trailing_partial_character_is_released_at_the_end(codec) -> None:
    ids = codec.encode("ab 日")[:-1]  # the last byte of 日 is missing
    deltas, _ = stream(codec, ids)
    assert "".join(deltas) == codec.decode(ids) and deltas[-1].endswith("\ufffd")


def test_a_stop_string_cuts_where_it_begins_and_holds_its_prefix_back(codec) -> None:
    ids = codec.encode("x = 1\nreturn value\ny = 2")
    deltas, tx = stream(codec, ids, stop=["return"])
    assert "".join(deltas) == "x = 1\n" and tx.stop_at == len("x = 1\n")
    assert "".join(deltas[:-1]) == "x = 1\n"[: len("".join(deltas[:-1]))]
    kept = tx.tokens_before(tx.stop_at)
    assert codec.decode(ids[:kept]).startswith("x = 1\n")
    assert len(codec.decode(ids[:kept - 1])) < len("x = 1\n")


def test_append_tokens_cuts_the_output_at_the_stop_string(codec) -> None:
    prompt = codec.encode("def f():")
    req = Request("r", prompt, SamplingParams(max_tokens=64, stop=("STOP",)), DecodeParams())
    ids = codec.encode("    return 1  # STOP here and more")
    kept = append_tokens(req, ids, eos_ids=(), detok=codec.decode)
    assert req.is_finished and req.finish_reason == "stop"
    assert req.detokenizer.text == "    return 1  # "
    assert kept == len(req.output_ids) < len(ids)


@pytest.mark.parametrize("stop", [(), ("\n\n\n\n", "never there")])
def test_the_cost_of_a_token_does_not_grow_with_the_output(codec, stop) -> None:
    """Work counted (ids handed to the decoder per token) and timed, at output token ~100 and
    ~4,000: the counts are equal, the time is within noise (2x here: the box is shared)."""
    unit = codec.encode(TEXT)
    ids = (unit * (4200 // len(unit) + 1))[:4200]
    decoded: list[int] = []

    def counting_decode(window: Sequence[int]) -> str:
        decoded.append(len(window))
        return codec.decode(window)

    tx = IncrementalDetokenizer(counting_decode, codec.encode("def f():"), stop)
    per_token_ids, per_token_s = [], []
    for tok in ids:
        before = len(decoded)
        t0 = time.perf_counter()
        tx.push(tok)
        tx.take_delta()
        per_token_s.append(time.perf_counter() - t0)
        per_token_ids.append(sum(decoded[before:]))
    early, late = slice(100, 200), slice(3900, 4000)
    assert sum(per_token_ids[late]) <= sum(per_token_ids[early]) * 1.1
    assert max(per_token_ids) <= 16  # a window of a few ids, never the output
    s = sorted(per_token_s[early])[50], sorted(per_token_s[late])[50]  # medians
    assert s[1] < 2 * s[0] + 20e-6, s
