"""The `tandem` command: one entry point, one module per subcommand (imported lazily so
that `tandem generate` does not pay for Ray)."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("models.train", "train the tri-mode model on the Python standard library"),
    "generate": ("cluster.generate_cmd", "generate text from a prompt in any decoding mode"),
    "bench": ("bench.cli", "benchmarks: modes, slo, serve"),
    "serve": ("cluster.serve_cmd", "start the OpenAI-compatible server"),
}


def usage() -> str:
    lines = ["usage: tandem COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`tandem COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"tandem: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[name][0])
    module.main(rest)


if __name__ == "__main__":
    main()
