"""`tandem train`: train the tri-mode model on the Python standard library.

Joint objective (models/objective.py): AR cross-entropy + 0.3 x masked diffusion. With
--distill-fraction > 0, that share of each batch is the model's own greedy continuations of
training prompts (regenerated every --regen-every steps), trained with the diffusion loss
only: acceptance is agreement with the model's own AR output, so the drafter learns that
output directly. Checkpoints and a JSONL log go to --out as training goes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models import corpus
from models.batch import Chunk, ChunkBatch
from models.chat_template import PYTHON_CHAT_TEMPLATE
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.objective import ObjectiveConfig, joint_loss
from models.probe import draft_agreement, greedy_continue
from models.tokenizer import TextCodec, read_tokenizer, train_bpe
from models.transformer import TriModeLM


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tandem train", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--data", type=Path, default=Path("data"), help="token cache directory")
    p.add_argument("--init", type=Path, help="start from this checkpoint instead of scratch")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock training budget")
    p.add_argument("--max-steps", type=int, default=10**9)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--max-files", type=int, default=0,
                   help="use about this many corpus files (0 = all; for quick test runs)")
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--diffusion-weight", type=float, default=0.3)
    p.add_argument("--pattern-probs", type=float, nargs=3, default=(0.4, 0.3, 0.3),
                   metavar=("RANDOM", "SEED", "ALL"))
    p.add_argument("--distill-fraction", type=float, default=0.0)
    p.add_argument("--regen-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--save-every-min", type=float, default=10.0)
    p.add_argument("--distill-after-min", type=float, default=0.0,
                   help="start self-distillation after this many minutes")
    p.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda)")
    p.add_argument("--save-dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def prepare_data(data_dir: Path, vocab: int, max_files: int = 0
                 ) -> tuple[TextCodec, dict[str, torch.Tensor]]:
    """Tokenizer + token streams of both splits, cached under data_dir (safetensors).
    max_files > 0 keeps every k-th file so about that many remain (quick test runs)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tok_path, streams_path = data_dir / "tokenizer.json", data_dir / f"streams-{vocab}.safetensors"
    files = corpus.list_sources()
    if max_files:
        train = [f for f in files if f.split == "train"]
        held = [f for f in files if f.split == "heldout"]
        files = train[:: max(1, len(train) // max_files)] + held[:: max(1, len(held) // 5)]
    corpus.write_manifest(files, data_dir / "manifest.json")
    if not tok_path.exists():
        train_texts = (corpus.read_text(f.relpath) for f in files if f.split == "train")
        train_bpe(train_texts, vocab).save(str(tok_path))
    codec = TextCodec.trained(read_tokenizer(tok_path))
    if not streams_path.exists():
        streams = {}
        for split in ("train", "heldout"):
            texts = [corpus.read_text(f.relpath) for f in files if f.split == split]
            ids: list[int] = []
            for enc in codec.encode_batch(texts):
                ids.extend(enc + [codec.eos_id])
            streams[split] = torch.tensor(ids, dtype=torch.int32)
        save_file(streams, str(streams_path))
    return codec, {k: v.long() for k, v in load_file(str(streams_path)).items()}


def windows(stream: torch.Tensor, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, stream.numel() - length, (n,), generator=gen)
    return torch.stack([stream[s:s + length] for s in starts.tolist()])


def lr_at(step: int, args: argparse.Namespace, progress: float) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def evaluate(model: TriModeLM, heldout: torch.Tensor, block: int = 8) -> dict:
    model.eval()
    gen = torch.Generator().manual_seed(1234)
    seqs = windows(heldout, 16, 257, gen)
    device = model.lm_head.weight.device
    batch = ChunkBatch.from_chunks([Chunk.causal(s[:-1].tolist()) for s in seqs], device)
    logits = model(batch).logits.float().cpu()
    nll = torch.nn.functional.cross_entropy(logits, seqs[:, 1:].reshape(-1)).item()
    agree = draft_agreement(model, windows(heldout, 32, 64, gen), block)
    model.train()
    return {"heldout_ppl": math.exp(nll), **agree}


def build_model(args: argparse.Namespace, codec: TextCodec) -> TriModeLM:
    if args.init:
        return load_checkpoint(args.init).train()
    config = ModelConfig(
        vocab_size=codec.vocab_size, hidden_size=args.hidden, num_layers=args.layers,
        num_heads=args.heads, num_kv_heads=args.kv_heads, head_dim=args.hidden // args.heads,
        intermediate_size=args.ffn, max_position_embeddings=2048,
        mask_token_id=codec.mask_id, bos_token_id=codec.bos_id, eos_token_id=codec.eos_id,
        pad_token_id=codec.pad_id, block_length=8)
    model = TriModeLM(config)
    model.init_weights(args.seed)
    return model.train()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    codec, streams = prepare_data(args.data, args.vocab, args.max_files)
    model = build_model(args, codec).to(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    objective = ObjectiveConfig(diffusion_weight=args.diffusion_weight,
                                pattern_probs=tuple(args.pattern_probs))
    gen = torch.Generator().manual_seed(args.seed)
    log = (args.out / "train_log.jsonl").open("a")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device == "cuda")
    distilled = torch.empty(0, args.seq_len, dtype=torch.long)
    start = last_save = time.time()
    budget = args.minutes * 60
    step = 0
    print(f"model: {model.config.num_parameters() / 1e6:.2f}M parameters; "
          f"train tokens {streams['train'].numel()}, held-out {streams['heldout'].numel()}",
          flush=True)
    while step < args.max_steps and time.time() - start < budget:
        minutes = (time.time() - start) / 60
        distilling = args.distill_fraction > 0 and minutes >= args.distill_after_min
        n_distill = round(args.batch * args.distill_fraction) if distilling else 0
        if n_distill and (distilled.numel() == 0 or step % args.regen_every == 0):
            with autocast:
                distilled = make_distill_set(model, streams["train"], gen, args)
        seqs = windows(streams["train"], args.batch - n_distill, args.seq_len, gen)
        if n_distill:
            pick = torch.randint(0, distilled.shape[0], (n_distill,), generator=gen)
            seqs = torch.cat([seqs, distilled[pick]])
        ar_rows = torch.arange(args.batch) < args.batch - n_distill
        block = random.choice(objective.block_lengths)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args, (time.time() - start) / budget)
        with autocast:
            loss, stats = joint_loss(model, seqs, ar_rows, objective, gen, block)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        record = {"step": step, "minutes": minutes, "distill": n_distill, **stats}
        if step % args.eval_every == 0:
            with autocast:
                record.update(evaluate(model, streams["heldout"]))
            print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
        log.flush()
        if time.time() - last_save > args.save_every_min * 60:
            save(model, codec, args.out, args.save_dtype)
            last_save = time.time()
    save(model, codec, args.out, args.save_dtype)
    final = {"step": step, "minutes": (time.time() - start) / 60, "final": True,
             **evaluate(load_checkpoint(args.out).to(args.device), streams["heldout"])}
    log.write(json.dumps(final) + "\n")
    print(json.dumps(final), flush=True)


@torch.no_grad()
def make_distill_set(model: TriModeLM, stream: torch.Tensor, gen: torch.Generator,
                     args: argparse.Namespace, num: int = 64) -> torch.Tensor:
    """The model's own greedy continuations: a real prompt of a quarter of seq_len, then
    greedy tokens up to seq_len."""
    model.eval()
    prompt_len = args.seq_len // 4
    prompts = windows(stream, num, prompt_len, gen)
    cont = greedy_continue(model, prompts, args.seq_len - prompt_len)
    model.train()
    return torch.cat([prompts, cont], dim=1)


def save(model: TriModeLM, codec: TextCodec, out: Path, dtype: str) -> None:
    save_checkpoint(model, out, getattr(torch, dtype))
    codec.save(out, PYTHON_CHAT_TEMPLATE)  # tandem's models are trained on Python source


if __name__ == "__main__":
    main()
