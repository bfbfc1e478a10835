"""Self-speculation is lossless: both speculative modes print exactly AR's tokens, alone and
inside mixed batches, greedy and seeded, on held-out prompts of the shipped model."""

from __future__ import annotations

import pytest

from models.heldout import load_prompts
from tests.engine.helpers import make_engine, run

NUM_PROMPTS = 50
LENGTHS = [64 + (i * 37) % 193 for i in range(NUM_PROMPTS)]  # 64..256 new tokens
# One request at a time is the slowest path (a step per few tokens), and the batch test below
# checks every prompt again: the first 20 (64..249 tokens, ~3,100 in all) suffice alone.
NUM_ALONE = 20


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return load_prompts(num=NUM_PROMPTS)


@pytest.fixture(scope="module")
def ar_reference(tiny_model, codec, prompts):
    engine = make_engine(tiny_model, codec)
    return [o.token_ids for o in run(engine, prompts, ["ar"] * NUM_PROMPTS, LENGTHS)]


@pytest.mark.parametrize("mode", ["spec_linear", "spec_quadratic"])
def test_speculation_alone_equals_ar_greedy(tiny_model, codec, prompts, ar_reference,
                                            mode: str) -> None:
    engine = make_engine(tiny_model, codec, max_num_seqs=1)  # one request at a time
    lengths = LENGTHS[:NUM_ALONE]
    outs = run(engine, prompts[:NUM_ALONE], [mode] * NUM_ALONE, lengths)
    for i, out in enumerate(outs):
        assert out.token_ids == ar_reference[i], f"prompt {i} diverges in {mode}"
    accepted = sum(o.accepted_by_mode.get(mode, 0) for o in outs)
    assert accepted > sum(lengths) // 4, "drafts are (almost) never accepted"


def test_speculation_in_mixed_batches_of_8_equals_ar(tiny_model, codec, prompts,
                                                     ar_reference) -> None:
    cycle = ["spec_linear", "spec_quadratic", "ar", "diffusion"]
    modes = [cycle[i % 4] for i in range(NUM_PROMPTS)]
    engine = make_engine(tiny_model, codec, max_num_seqs=8)
    outs = run(engine, prompts, modes, LENGTHS)
    for i, (mode, out) in enumerate(zip(modes, outs, strict=True)):
        if mode != "diffusion":
            assert out.token_ids == ar_reference[i], f"prompt {i} diverges in {mode} (batch)"
        assert len(out.token_ids) == LENGTHS[i]
    assert engine.pool.num_free == engine.pool.num_blocks


def test_seeded_sampling_is_the_same_alone_in_a_batch_and_in_every_lossless_mode(
        tiny_model, codec, prompts) -> None:
    prompt, n = prompts[7], 64
    alone = {m: run(make_engine(tiny_model, codec), [prompt], [m], [n], 0.8, seed=99)[0]
             for m in ("ar", "spec_linear", "spec_quadratic")}
    texts = {m: o.token_ids for m, o in alone.items()}
    assert texts["spec_linear"] == texts["ar"] == texts["spec_quadratic"]
    # In a batch of 8 beside other prompts and modes (same seed for the request under test).
    engine = make_engine(tiny_model, codec, max_num_seqs=8)
    batch_prompts = [prompt] + prompts[10:17]
    modes = ["spec_quadratic", "ar", "diffusion", "spec_linear"] * 2
    outs = run(engine, batch_prompts, modes, [n] * 8, 0.8, seed=99)
    assert outs[0].token_ids == texts["ar"]
    # a different seed gives different text (the seed is really used)
    other = run(make_engine(tiny_model, codec), [prompt], ["ar"], [n], 0.8, seed=5)[0]
    assert other.token_ids != texts["ar"]
