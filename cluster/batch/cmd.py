"""`tandem batch`: run an OpenAI Batch JSONL file through tandem against a deadline.

    tandem batch --input in.jsonl --output out.jsonl [--errors errors.jsonl] [--deadline 30m]
                 [--config ray_configs/batch.yaml | --address ADDR --app NAME] [--json]
                 [--strict-deadline] [--window N] [--max-in-flight N]

Each input line is {"custom_id", "method": "POST", "url": "/v1/completions" or
"/v1/chat/completions", "body"}; each output line {"id", "custom_id", "response":
{"status_code", "request_id", "body"}, "error"}, the body exactly what the HTTP API answers
(a refused request gets its 4xx and error body). Rerunning the same command resumes: the
custom_ids already in the output are skipped. Exit status: 0 every request answered (some
may be refused), 1 some failed, 2 bad usage or files, 3 --strict-deadline and the deadline
cannot be met (by the start-up estimate, or by the pace measured once running: what
finished is written), 130 interrupted (what was written stays).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from cluster.batch.journal import OutputError
from cluster.batch.lines import InputError

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "ray_configs" / "batch.yaml"
SERVED_CONFIG = Path(__file__).resolve().parents[2] / "ray_configs" / "local.yaml"
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


class UsageError(Exception):
    pass


def parse_duration(text: str) -> float:
    """'90s', '30m', '1h30m', '2h', '45' (seconds) -> seconds."""
    m = _DURATION.match(text.strip().lower())
    if not text.strip() or m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 30m, 1h30m)")
    h, mi, s = (float(g or 0) for g in m.groups())
    seconds = h * 3600 + mi * 60 + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the deadline must be > 0, got {text!r}")
    return seconds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tandem batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, type=Path, help="OpenAI Batch JSONL requests")
    p.add_argument("--output", required=True, type=Path, help="results (appended; resumed)")
    p.add_argument("--errors", type=Path, default=None,
                   help="bad input lines (default: OUTPUT with .errors.jsonl)")
    p.add_argument("--deadline", type=parse_duration, default=None,
                   help="finish within this long from the start (90s, 30m, 1h30m)")
    p.add_argument("--strict-deadline", action="store_true",
                   help="exit (status 3) instead of running best-effort when the estimate "
                        "says the deadline cannot be met")
    p.add_argument("--config", type=Path, default=None,
                   help="Serve YAML of the replicas to start (default ray_configs/batch.yaml);"
                        " with --app: the YAML that app runs (default ray_configs/local.yaml)")
    p.add_argument("--address", default=None, help="a running Ray cluster (default: local)")
    p.add_argument("--app", default=None,
                   help="run on this running Serve app's replicas, beside its online traffic")
    p.add_argument("--window", type=int, default=None,
                   help="requests in flight at least (default: --max-in-flight); behind "
                        "schedule the job raises it up to --max-in-flight")
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="requests in flight at most (default: max_num_seqs per replica; "
                        "1/16 of it with --app, beside online traffic: BENCHMARKS.md; "
                        "--window when only that is set, if larger)")
    p.add_argument("--priority", type=int, default=-1,
                   help="engine priority of the batch's requests (online traffic: 0)")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on the last line of stdout")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="the progress bar (default: when stderr is a terminal)")
    args = p.parse_args(argv)
    for name in ("window", "max_in_flight"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if None not in (args.window, args.max_in_flight) and args.window > args.max_in_flight:
        p.error(f"--window {args.window} must be <= --max-in-flight {args.max_in_flight}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    from cluster.batch.job import BatchJob  # after argparse: --help stays fast

    try:
        code = BatchJob(args, time.monotonic()).run()
    except (InputError, OutputError, UsageError, LookupError, OSError) as err:
        # OSError: an output folder that is not there, no Ray cluster at --address
        print(f"tandem batch: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt
