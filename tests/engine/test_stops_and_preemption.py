"""Requests stop on EOS, stop strings, stop ids and max_tokens in any mode, even mid-block;
aborts and preemptions never leak a KV block."""

from __future__ import annotations

import random

import pytest

from engine.params import DecodeParams, SamplingParams
from models.heldout import load_prompts
from tests.engine.helpers import make_engine, run

MODES = ["ar", "diffusion", "spec_linear", "spec_quadratic"]


@pytest.fixture(scope="module")
def engine(tiny_model, codec):
    return make_engine(tiny_model, codec)


@pytest.fixture(scope="module")
def reference(engine):
    """Greedy AR continuation of one prompt, ignoring EOS (what stops are cut from)."""
    prompt = load_prompts(num=3)[2]
    return prompt, run(engine, [prompt], ["ar"], [40])[0]


@pytest.mark.parametrize("mode", MODES)
def test_max_tokens_mid_block(engine, reference, mode: str) -> None:
    prompt, _ = reference
    out = run(engine, [prompt], [mode], [5], block_length=8)[0]  # 5 < block of 8
    assert len(out.token_ids) == 5 and out.finish_reason == "length"


@pytest.mark.parametrize("mode", ["ar", "spec_linear", "spec_quadratic"])
def test_stop_token_id_and_stop_string_mid_block(engine, reference, mode: str) -> None:
    prompt, ref = reference
    stop_id = ref.token_ids[6]
    first = ref.token_ids.index(stop_id)
    out = engine.generate([prompt], SamplingParams(max_tokens=40, stop_token_ids=(stop_id,)),
                          DecodeParams(mode=mode, block_length=8))[0]
    assert out.token_ids == ref.token_ids[: first + 1] and out.finish_reason == "stop"
    stop = ref.text[12:15]
    out = engine.generate([prompt], SamplingParams(max_tokens=40, stop=(stop,)),
                          DecodeParams(mode=mode, block_length=8))[0]
    assert out.text == ref.text[: ref.text.index(stop)] and out.finish_reason == "stop"


@pytest.mark.parametrize("mode", MODES)
def test_eos_ends_the_request_in_every_mode(tiny_model, codec, engine, reference,
                                            mode: str) -> None:
    """Declare a token this mode emits to be EOS: the mode must end right after its first
    occurrence (diffusion through its in-block EOS path, without a commit pass)."""
    prompt, _ = reference
    free_run = run(engine, [prompt], [mode], [40], block_length=8)[0].token_ids
    eos = free_run[5]
    eos_engine = make_engine(tiny_model, codec,
                             model_config=tiny_model.config.replace(eos_token_id=eos))
    out = eos_engine.generate([prompt], SamplingParams(max_tokens=40),
                              DecodeParams(mode=mode, block_length=8))[0]
    assert out.finish_reason == "stop"
    assert out.token_ids == free_run[: free_run.index(eos) + 1]
    assert eos_engine.pool.num_free == eos_engine.pool.num_blocks


def test_200_requests_with_aborts_and_preemptions_leave_every_block_free(tiny_model,
                                                                        codec) -> None:
    rng = random.Random(0)
    engine = make_engine(tiny_model, codec, max_num_seqs=16, num_blocks=48)
    prompts = load_prompts(num=200)
    live: list[str] = []
    submitted = finished = aborted = 0
    while submitted < 200 or engine.has_unfinished():
        while submitted < 200 and len(live) < 24:
            req = engine.add_request(
                prompts[submitted][: rng.randint(5, 160)],
                SamplingParams(max_tokens=rng.randint(1, 48), temperature=rng.choice([0, 1])),
                DecodeParams(mode=rng.choice(MODES), block_length=rng.choice([None, 4, 8])))
            live.append(req.id)
            submitted += 1
        if live and rng.random() < 0.08:
            victim = rng.choice(live)
            assert engine.abort(victim)
            live.remove(victim)
            aborted += 1
        for out in engine.step():
            if out.finished:
                live.remove(out.request_id)
                finished += 1
    assert finished + aborted == 200 and aborted > 0
    assert engine.scheduler.num_preemptions > 0, "the pool never ran dry: test is too easy"
    assert engine.pool.num_free == engine.pool.num_blocks
