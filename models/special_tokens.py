"""The special token ids of a checkpoint, read from its own files, never from fixed names.

Where each id comes from, first found wins (as transformers and vLLM read them):
  bos, pad, mask: config.json `<x>_token_id`, else tokenizer_config.json `<x>_token` (a name,
                  looked up in tokenizer.json).
  eos:            every id of generation_config.json `eos_token_id` (an int or a list) and of
                  config.json `eos_token_id`, plus tokenizer_config.json `eos_token`: each one
                  ends a request.
Only eos is required; a checkpoint without a mask token serves the AR mode alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from models.errors import CheckpointError


@dataclass(frozen=True)
class SpecialTokens:
    eos_ids: tuple[int, ...]
    bos_id: int | None = None
    pad_id: int | None = None
    mask_id: int | None = None
    # The names the chat template sees (bos_token, eos_token, ...), as transformers passes them.
    names: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.eos_ids:
            raise ValueError("SpecialTokens needs at least one eos id")

    @property
    def eos_id(self) -> int:
        """The first eos id (what a trainer appends after a document)."""
        return self.eos_ids[0]

    def check_vocab(self, vocab_size: int, source: str) -> None:
        for name, value in (("bos", self.bos_id), ("pad", self.pad_id), ("mask", self.mask_id)):
            if value is not None and not 0 <= value < vocab_size:
                raise CheckpointError(f"{source}: field '{name}_token_id' = {value} is outside "
                                      f"the vocabulary of {vocab_size}")
        for value in self.eos_ids:
            if not 0 <= value < vocab_size:
                raise CheckpointError(f"{source}: field 'eos_token_id' = {value} is outside "
                                      f"the vocabulary of {vocab_size}")

    @classmethod
    def load(cls, directory: str | Path, tokenizer: Tokenizer) -> SpecialTokens:
        directory = Path(directory)
        config = read_json(directory / "config.json")
        generation = read_json(directory / "generation_config.json")
        tok_config = read_json(directory / "tokenizer_config.json")
        tok_source = str(directory / "tokenizer_config.json")

        def by_name(key: str) -> int | None:
            name = token_name(tok_config.get(key))
            if name is None:
                return None
            tid = tokenizer.token_to_id(name)
            if tid is None:
                raise CheckpointError(f"{tok_source}: field '{key}' names {name!r}, which is "
                                      "not in tokenizer.json")
            return tid

        def one(key: str) -> int | None:
            value = config.get(f"{key}_token_id")
            if isinstance(value, list):  # a few exporters write a one-element list
                value = value[0] if value else None
            return int(value) if value is not None else by_name(f"{key}_token")

        eos: list[int] = []
        for value in (generation.get("eos_token_id"), config.get("eos_token_id"),
                      by_name("eos_token")):
            for tid in value if isinstance(value, list) else [value]:
                if tid is not None and int(tid) not in eos:
                    eos.append(int(tid))
        if not eos:
            raise CheckpointError(f"{directory / 'config.json'}: field 'eos_token_id' is "
                                  "missing (also from generation_config.json and "
                                  "tokenizer_config.json 'eos_token')")
        names = {key: token_name(tok_config.get(key)) for key in
                 ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")}
        for key in ("bos", "eos", "pad", "mask"):  # a name for the template where only an id is
            tid = eos[0] if key == "eos" else one(key)
            if names[f"{key}_token"] is None and tid is not None:
                names[f"{key}_token"] = tokenizer.id_to_token(tid)
        return cls(tuple(eos), one("bos"), one("pad"), one("mask"),
                   tuple((k, v) for k, v in names.items() if v is not None))


def token_name(value: Any) -> str | None:
    """tokenizer_config.json writes a token as a string or as {"content": ..., ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return raw
