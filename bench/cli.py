"""`tandem bench SUITE ...`: dispatch to a benchmark suite's main(argv), imported lazily
(the suites import the engine, torch and Ray only when they run)."""

from __future__ import annotations

from cluster.cli import dispatch

SUITES = {
    "modes": ("bench.modes", "tokens per forward and speed of each decoding mode"),
    "slo": ("bench.slo", "SLO attainment and goodput: auto against each fixed mode"),
    "serve": ("bench.serve", "the HTTP server under load"),
    "disagg": ("bench.disagg", "fused against disaggregated (draft + verify pool) speculation"),
}


def main(argv: list[str] | None = None) -> None:
    dispatch("tandem bench", "suite", SUITES, argv)


if __name__ == "__main__":
    main()
