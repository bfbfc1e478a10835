"""The `tandem` command: one entry point, one module per subcommand (imported lazily so
that `tandem generate` does not pay for Ray)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping

COMMANDS = {
    "train": ("models.train", "train the tri-mode model on the Python standard library"),
    "generate": ("cluster.generate_cmd", "generate text from a prompt in any decoding mode"),
    "bench": ("bench.cli", "benchmarks: modes, slo, serve"),
    "serve": ("cluster.serve_cmd", "start the OpenAI-compatible server"),
    "batch": ("cluster.batch.cmd", "run an OpenAI Batch JSONL file against a deadline"),
}


def dispatch(prog: str, noun: str, table: Mapping[str, tuple[str, str]],
             argv: list[str] | None) -> None:
    """Run table[argv[0]]'s module main(argv[1:]); usage on -h, a message on a bad name."""
    argv = sys.argv[1:] if argv is None else argv
    lines = [f"usage: {prog} {noun.upper()} [ARGS...]", "", f"{noun}s:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in table.items()]
    lines += ["", f"`{prog} {noun.upper()} --help` for its options."]
    usage = "\n".join(lines)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in table:
        print(f"{prog}: unknown {noun} {name!r}\n\n{usage}", file=sys.stderr)
        sys.exit(2)
    importlib.import_module(table[name][0]).main(rest)


def main(argv: list[str] | None = None) -> None:
    dispatch("tandem", "command", COMMANDS, argv)


if __name__ == "__main__":
    main()
