"""`tandem train` end to end on a sliver of the corpus: tokenizer, manifest, joint loss,
self-distillation, checkpoint and log. (The shipped model's full run is in TRAINING.md.)"""

from __future__ import annotations

import json

import torch

from cluster.cli import main as tandem
from models.checkpoint import load_checkpoint
from models.objective import ObjectiveConfig, joint_batch, noise_blocks
from models.tokenizer import TextCodec


def test_train_command_writes_a_loadable_checkpoint(tmp_path) -> None:
    out, data = tmp_path / "ckpt", tmp_path / "data"
    tandem(["train", "--out", str(out), "--data", str(data), "--max-files", "30",
            "--vocab", "400", "--hidden", "32", "--layers", "1", "--heads", "2",
            "--kv-heads", "1", "--ffn", "64", "--seq-len", "32", "--batch", "4",
            "--max-steps", "4", "--eval-every", "2", "--distill-fraction", "0.5",
            "--regen-every", "2"])
    model = load_checkpoint(out)
    codec = TextCodec.load(out)
    assert model.config.mask_token_id == codec.mask_id
    manifest = json.loads((data / "manifest.json").read_text())
    assert {f["split"] for f in manifest["files"]} == {"train", "heldout"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["final"] and "heldout_ppl" in log[-1] and len(log[-1]["seed_offsets"]) == 7
    assert any(r.get("distill") for r in log)


def test_noisy_blocks_follow_the_three_patterns() -> None:
    clean = torch.arange(1, 1 + 4 * 64).view(4, 64) % 50 + 5
    cfg = ObjectiveConfig(pattern_probs=(0.0, 1.0, 0.0))  # seed pattern only
    noisy, weight = noise_blocks(clean, 8, 3, cfg, torch.Generator().manual_seed(0))
    blocks = noisy.view(4, 8, 8)
    assert torch.equal(blocks[:, :, 0], clean.view(4, 8, 8)[:, :, 0])  # clean seed
    assert (blocks[:, :, 1:] == 3).all()  # all masks after it
    assert torch.allclose(weight.view(4, 8, 8)[:, :, 1:], torch.tensor(8 / 7))
    cfg = ObjectiveConfig(pattern_probs=(0.0, 0.0, 1.0))
    noisy, weight = noise_blocks(clean, 8, 3, cfg, torch.Generator().manual_seed(0))
    assert (noisy == 3).all() and torch.allclose(weight, torch.tensor(1.0))


def test_joint_visibility_is_causal_clean_and_blockwise_noisy() -> None:
    b = joint_batch(1, 8, 4)
    # clean token 5 sees clean 0..5; noisy token of block 1 (positions 4..7) sees clean 0..3
    # and its whole noisy block (chunk rows 12..15)
    assert b.causal_limit[5] == 5 and b.block_hi[5] == b.block_lo[5]
    assert b.causal_limit[8 + 5] == 3
    assert (b.block_lo[8 + 5], b.block_hi[8 + 5]) == (12, 16)
    assert b.positions[8 + 5] == 5
