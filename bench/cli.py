"""`tandem bench SUITE ...`: dispatch to a benchmark suite's main(argv), imported lazily
(the suites import the engine, torch and Ray only when they run)."""

from __future__ import annotations

import importlib
import sys

SUITES = {
    "modes": ("bench.modes", "tokens per forward and speed of each decoding mode"),
    "slo": ("bench.slo", "SLO attainment and goodput: auto against each fixed mode"),
    "serve": ("bench.serve", "the HTTP server under load"),
}


def usage() -> str:
    lines = ["usage: tandem bench SUITE [ARGS...]", "", "suites:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in SUITES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in SUITES:
        print(f"tandem bench: unknown suite {name!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    try:
        module = importlib.import_module(SUITES[name][0])
    except ModuleNotFoundError as err:
        if err.name != SUITES[name][0]:
            raise
        print(f"tandem bench {name}: not available yet ({err.name} is missing)",
              file=sys.stderr)
        sys.exit(2)
    module.main(rest)


if __name__ == "__main__":
    main()
