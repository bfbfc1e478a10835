"""A checkpoint's tokenizer (Hugging Face `tokenizers`) and its special ids; the byte-level
BPE that `tandem train` builds for its own models."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from models.errors import CheckpointError
from models.special_tokens import SpecialTokens

# The tokens `tandem train` gives its own tokenizers; order fixes the ids: pad=0, bos=1,
# eos=2, mask=3. Loading a checkpoint never relies on these names (models/special_tokens.py).
SPECIAL_TOKENS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>")


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


class TextCodec:
    """Encode and decode text; knows the checkpoint's special ids."""

    def __init__(self, tokenizer: Tokenizer, special: SpecialTokens) -> None:
        self.tokenizer, self.special = tokenizer, special
        self.eos_id, self.bos_id = special.eos_id, special.bos_id
        self.pad_id, self.mask_id = special.pad_id, special.mask_id

    @classmethod
    def load(cls, directory: str | Path) -> TextCodec:
        directory = Path(directory)
        tokenizer = read_tokenizer(directory / "tokenizer.json")
        special = SpecialTokens.load(directory, tokenizer)
        special.check_vocab(tokenizer.get_vocab_size(), str(directory))
        return cls(tokenizer, special)

    @classmethod
    def trained(cls, tokenizer: Tokenizer) -> TextCodec:
        """A tokenizer from train_bpe: its special ids are SPECIAL_TOKENS'."""
        ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
        if None in ids:
            raise ValueError(f"special token {SPECIAL_TOKENS[ids.index(None)]!r} is missing")
        pad, bos, eos, mask = ids
        names = tuple(zip(("pad_token", "bos_token", "eos_token", "mask_token"),
                          SPECIAL_TOKENS, strict=True))
        return cls(tokenizer, SpecialTokens((eos,), bos, pad, mask, names))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """As the tokenizer's own post-processor says (a Llama-3 tokenizer adds its BOS);
        add_special_tokens=False for text that already has them (a rendered chat)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Training text: no special tokens (the trainer places eos itself)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def save(self, directory: str | Path, chat_template: str | None = None) -> None:
        """tokenizer.json, and tokenizer_config.json naming the special tokens."""
        directory = Path(directory)
        self.tokenizer.save(str(directory / "tokenizer.json"))
        config: dict[str, object] = dict(self.special.names)
        if chat_template is not None:
            config["chat_template"] = chat_template
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def read_tokenizer(path: Path) -> Tokenizer:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on bad JSON
        raise CheckpointError(f"{path}: cannot be read ({err})") from None
