"""The chat template of the default model.

tandem-tiny was trained on Python source only, so a conversation is rendered as Python: each
system/user message is a comment block headed by its role, an assistant turn opens with
`# assistant:` on a line of its own and is followed by code (the model's own kind of text):

    # system: You write short Python functions.
    # user: Parse command-line arguments.
    #   Return a Namespace.
    # assistant:
    <the model continues here>

Continuation lines of a message are indented comments (`#   `). Earlier assistant turns are
rendered as they were produced (code after `# assistant:`). Generation also stops where the
model starts a new `# user:` / `# system:` block.
"""

from __future__ import annotations

from collections.abc import Sequence

STOP = ("\n# user:", "\n# system:")


def _comment(role: str, text: str) -> str:
    first, *rest = text.split("\n") if text else [""]
    lines = [f"# {role}: {first}".rstrip()] + [f"#   {line}".rstrip() for line in rest]
    return "\n".join(lines) + "\n"


def render(messages: Sequence[tuple[str, str]]) -> str:
    """(role, content) pairs -> the prompt, ending with an open assistant turn."""
    out = []
    for role, content in messages:
        if role == "assistant":
            out.append(f"# assistant:\n{content}" + ("" if content.endswith("\n") else "\n"))
        else:
            out.append(_comment("system" if role == "developer" else role, content))
    out.append("# assistant:\n")
    return "".join(out)
