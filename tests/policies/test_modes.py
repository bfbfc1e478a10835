"""The mode-facts table: what every package reads about the decoding modes."""

from __future__ import annotations

import pytest

from policies.modes import (
    DEFAULT_BLOCKS,
    MODE_FACTS,
    ChunkKind,
    Mode,
    ModeFacts,
    max_work_tokens,
    work_tokens,
)
from policies.option import AR1, Option, default_option, option_of


def test_work_per_forward_of_each_mode():
    assert [work_tokens(m, 4) for m in ("ar", "diffusion", "spec_linear", "spec_quadratic")] == [
        1, 4, 4, 20]
    assert Option("spec_quadratic", 3).work_tokens == 12 and AR1.work_tokens == 1


def test_defaults_losslessness_and_kinds():
    assert dict(DEFAULT_BLOCKS) == {Mode.AR: 1, Mode.DIFFUSION: 8, Mode.SPEC_LINEAR: 8,
                                    Mode.SPEC_QUADRATIC: 4, Mode.SPEC_PIPELINED: 4}
    assert [m for m, f in MODE_FACTS.items() if not f.is_lossless] == [Mode.DIFFUSION]
    assert default_option("spec_quadratic") == Option(Mode.SPEC_QUADRATIC, 4)
    assert ChunkKind("score") is ChunkKind.SCORE
    kinds = {k for f in MODE_FACTS.values() for k in f.kinds}
    assert kinds | {ChunkKind.PREFILL, ChunkKind.SCORE} == set(ChunkKind)


def test_options_hold_the_enum_and_compare_with_strings():
    o = Option("spec_linear", 4)
    assert o.mode is Mode.SPEC_LINEAR and o.mode == "spec_linear" and o.key == "spec_linear/4"
    assert Option.parse(o.key) == o
    assert option_of(Mode.AR, 8) == AR1 and option_of("diffusion") == Option("diffusion", 8)
    with pytest.raises(ValueError, match="unknown mode"):
        Option("auto", 4)


def test_the_most_work_a_request_can_put_in_a_step():
    assert max_work_tokens(Mode.AUTO) == 20  # quadratic at its default block of 4
    assert max_work_tokens("spec_linear", 16) == 16 and max_work_tokens("ar", 16) == 1


def test_facts_check_themselves():
    with pytest.raises(ValueError):
        ModeFacts(Mode.AUTO, 1, ())
    with pytest.raises(ValueError):
        ModeFacts(Mode.AR, 4, (ChunkKind.AR,))

