"""Mode rules on plain numbers: the quadratic layout, diffusion commit and revision."""

from __future__ import annotations

from engine.kv_cache import BlockPool, KVCacheManager
from engine.modes.base import ModeContext
from engine.modes.diffusion import DiffusionMode
from engine.modes.spec_quadratic import quadratic_chunk
from engine.params import DecodeParams, SamplingParams
from engine.plan import WorkResult
from engine.request import Request

MASK, EOS = 3, 2


def test_quadratic_layout_follows_the_design() -> None:
    chunk = quadratic_chunk(seed=10, drafts=[11, 12], p=100, mask_id=MASK, context_len=100,
                            block_table=[0])
    b = 3
    assert chunk.tokens[:b] == [10, 11, 12] and chunk.tokens[b:] == [MASK] * (b * b)
    assert list(chunk.positions[:b]) == [100, 101, 102]
    for i in range(b):  # sub-block i: after d_i, sees d_0..d_i and itself
        rows = range(b + i * b, b + (i + 1) * b)
        assert [chunk.positions[r] for r in rows] == [100 + i + 1 + j for j in range(b)]
        assert all(chunk.causal_limit[r] == i for r in rows)
        assert all((chunk.block_lo[r], chunk.block_hi[r]) == (rows[0], rows[-1] + 1)
                   for r in rows)
    assert list(chunk.causal_limit[:b]) == [0, 1, 2]  # drafts are causal, no block
    assert all(chunk.block_lo[r] == chunk.block_hi[r] for r in range(b))


def diffusion(revision: float = 0.0) -> tuple[DiffusionMode, Request]:
    kv = KVCacheManager(BlockPool(8, 16))
    mode = DiffusionMode(ModeContext(kv, MASK, frozenset({EOS})))
    req = Request("r", [5, 6, 7], SamplingParams(max_tokens=20, seed=1),
                  DecodeParams(mode="diffusion", threshold=0.9, revision_threshold=revision,
                               max_revisions=1))
    req.output_ids = [8]
    kv.grow(req.cache, 12)
    req.cache.num_cached = 3  # the seed (8) is pending
    return mode, req


def test_diffusion_commits_confident_positions_and_at_least_one() -> None:
    mode, req = diffusion()
    work = mode.work(req, 4)
    assert work.kind == "denoise" and work.sample_rows == [1, 2, 3] and not work.write_slots
    mode.update(req, work, WorkResult([20, 21, 22], [0.5, 0.95, 0.6]))
    assert req.mode_state.block == [8, MASK, 21, MASK]
    work = mode.work(req, 4)
    mode.update(req, work, WorkResult([30, 31], [0.2, 0.3]))  # none confident: best one
    assert req.mode_state.block == [8, MASK, 21, 31]
    work = mode.work(req, 4)
    mode.update(req, work, WorkResult([40], [0.1]))
    assert req.mode_state.ready
    commit = mode.work(req, 4)
    assert commit.kind == "commit" and len(commit.write_slots) == 4
    adv = mode.update(req, commit, WorkResult([50], [0.9]))
    assert adv.tokens == [40, 21, 31, 50] and adv.num_cached == 3 + 4


def test_diffusion_revision_remasks_a_token_that_lost_confidence() -> None:
    mode, req = diffusion(revision=0.5)
    mode.update(req, mode.work(req, 4), WorkResult([20, 21, 22], [0.95, 0.2, 0.3]))
    work = mode.work(req, 4)
    assert work.score_rows == []  # what the last pass committed is not judged yet
    mode.update(req, work, WorkResult([21, 22], [0.2, 0.95]))
    assert req.mode_state.block == [8, 20, MASK, 22]
    work = mode.work(req, 4)
    assert work.score_rows == [1] and work.score_tokens == [20]
    mode.update(req, work, WorkResult([23], [0.99], scores=[0.1]))
    assert req.mode_state.block == [8, MASK, 23, 22]  # 20 fell under 0.5: masked again
    assert req.mode_state.revisions[1] == 1
    work = mode.work(req, 4)
    assert work.sample_rows == [1] and work.score_rows == [3]
    mode.update(req, work, WorkResult([24], [0.99], scores=[0.9]))
    assert req.mode_state.block == [8, 24, 23, 22] and mode.work(req, 4).kind == "commit"


def test_diffusion_ends_at_eos_inside_a_block_without_a_commit_pass() -> None:
    mode, req = diffusion()
    work = mode.work(req, 4)
    adv = mode.update(req, work, WorkResult([20, EOS, 22], [0.95, 0.95, 0.1]))
    assert adv.tokens == [20, EOS] and req.mode_state is None
