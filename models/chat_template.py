"""A checkpoint's chat template, rendered the way transformers' `apply_chat_template` does.

The template is the checkpoint's own: `chat_template` in tokenizer_config.json (a string, or
a list of {"name", "template"} of which "default" is used) or a `chat_template.jinja` file.
It runs in jinja2's ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, sees
`messages`, `add_generation_prompt` and the special token names (`bos_token`, `eos_token`,
...), and may call `raise_exception(msg)`, `strftime_now(fmt)` and the `tojson` filter, as
in transformers. The rendered text already holds its special tokens: encode it with
add_special_tokens=False (transformers does the same).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from models.errors import CheckpointError
from models.special_tokens import read_json, token_name

# The chat template `tandem train` writes into its checkpoints (tandem-tiny's own): the model
# knows only Python source, so a conversation is rendered as Python. Each system/user message
# is a comment block headed by its role (continuation lines `#   `), an assistant turn opens
# with `# assistant:` on a line of its own and is followed by code:
#     # system: You write short Python functions.
#     # user: Parse command-line arguments.
#     # assistant:
#     <the model continues here>
# Its generation_config.json stops chat replies where a new `# user:` / `# system:` starts.
PYTHON_CHAT_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "{%- if message['role'] == 'assistant' -%}\n"
    "{{ '# assistant:\\n' + message['content'] }}"
    "{{ '' if message['content'].endswith('\\n') else '\\n' }}\n"
    "{%- else -%}\n"
    "{%- set role = 'system' if message['role'] == 'developer' else message['role'] -%}\n"
    "{%- for line in message['content'].split('\\n') -%}\n"
    "{{ (('# ' + role + ': ' if loop.first else '#   ') + line).rstrip() + '\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{ '# assistant:\\n' }}{%- endif -%}\n")
PYTHON_CHAT_STOP = ("\n# user:", "\n# system:")


class ChatTemplateError(ValueError):
    """The template raised (raise_exception, a bad expression) on these messages."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers' override: jinja's own tojson escapes HTML characters.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    origin: str  # the file it came from, for errors
    special_tokens: tuple[tuple[str, str], ...] = ()  # bos_token, eos_token, ... names
    stop: tuple[str, ...] = ()  # generation_config.json stop_strings, added to chat requests

    def __post_init__(self) -> None:
        try:
            _compile(self.source)
        except jinja2.TemplateSyntaxError as err:
            raise CheckpointError(f"{self.origin}: field 'chat_template' is not a valid "
                                  f"Jinja template (line {err.lineno}: {err.message})") from None

    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True
               ) -> str:
        try:
            return _compile(self.source).render(
                messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                **dict(self.special_tokens))
        except jinja2.TemplateError as err:
            raise ChatTemplateError(f"messages: the chat template ({self.origin}) refused "
                                    f"them: {err}") from None
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as err:
            raise ChatTemplateError(f"messages: the chat template ({self.origin}) failed on "
                                    f"them: {type(err).__name__}: {err}") from None

    @staticmethod
    def load(directory: str | Path) -> ChatTemplate | None:
        """The checkpoint's template, or None when it has none."""
        directory = Path(directory)
        tok_path = directory / "tokenizer_config.json"
        tok_config = read_json(tok_path)
        jinja_path = directory / "chat_template.jinja"
        source, origin = tok_config.get("chat_template"), str(tok_path)
        if isinstance(source, list):  # named templates: use "default"
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            source = named.get("default")
        if source is None and jinja_path.is_file():
            source, origin = jinja_path.read_text(), str(jinja_path)
        if source is None:
            return None
        if not isinstance(source, str):
            raise CheckpointError(f"{origin}: field 'chat_template' must be a string")
        names = {k: token_name(tok_config.get(k)) for k in
                 ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")}
        stop = read_json(directory / "generation_config.json").get("stop_strings") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        return ChatTemplate(source, origin, tuple((k, v) for k, v in names.items() if v),
                            stop)


@lru_cache(maxsize=4)
def chat_template_of(directory: str) -> ChatTemplate | None:
    """Loaded once per process (the ingress renders every chat request with it)."""
    return ChatTemplate.load(directory)
