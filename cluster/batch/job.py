"""One run of `tandem batch`: read, check the output, state the plan against the deadline,
start or reach the replicas, run, summarize. cmd.py parses the command line."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cluster.batch import estimate, journal, replicas
from cluster.batch.adapter import Adapter
from cluster.batch.cmd import DEFAULT_CONFIG, SERVED_CONFIG, UsageError
from cluster.batch.lines import read_input
from cluster.batch.pacer import Pacer, PacerConfig
from cluster.batch.progress import Progress, Tally, render, summary
from cluster.batch.runner import JobRunner, RunOptions
from cluster.config import TandemConfig, load_config
from cluster.model_server import DEFAULT_PROFILE
from cluster.serve_cmd import read_yaml
from policies.option import AR1, Option
from policies.profile import Profile


class BatchJob:
    def __init__(self, args: argparse.Namespace, start: float) -> None:
        self.args, self.start = args, start
        self.say_to = sys.stderr if args.json else sys.stdout
        self.summary: dict[str, Any] | None = None  # set at the end
        self.ar_estimate_s: float | None = None  # the start-up estimate at AR (_plan)
        self.fast: Option | None = None  # what a job behind runs at first (None: auto)
        self.choose: Callable[[float | None], Option] | None = None  # (_plan) pacer.py
        self.gain: Callable[[int], float] | None = None  # (_plan) pacer.py

    def say(self, text: str) -> None:
        print(f"tandem batch: {text}", file=self.say_to, flush=True)

    def run(self) -> int:
        args = self.args
        inp = read_input(args.input)
        resumed = journal.prepare(args.output, inp)
        errors_path = args.errors or args.output.with_name(args.output.stem + ".errors.jsonl")
        journal.write_errors(errors_path, [e.to_json() for e in inp.errors])
        todo = [line for line in inp.lines if line.custom_id not in resumed.done]
        self.say(f"{inp.path}: {len(inp.lines)} requests, {len(inp.errors)} bad lines"
                 f"{f' (listed in {errors_path})' if inp.errors else ''}; "
                 f"{len(resumed.done)} already in {args.output}"
                 + (f" (a torn last line of {resumed.truncated_bytes} bytes was cut)"
                    if resumed.truncated_bytes else "") + f"; {len(todo)} to run")
        config = self._config()
        info = {"input": str(inp.path), "output": str(args.output),
                "errors_file": str(errors_path), "requests": len(inp.lines),
                "errors": len(inp.errors), "skipped": len(resumed.done), "todo": len(todo),
                "deadline_s": args.deadline}
        if not todo:
            return self._finish(Tally(), info)
        base, cap = self._windows(config)
        start = self._plan(config, todo, base, cap)
        if start is None:
            return 3
        return self._execute(config, todo, (base, start, cap), info)

    def _config(self) -> TandemConfig:
        path = self.args.config or (SERVED_CONFIG if self.args.app else DEFAULT_CONFIG)
        try:
            app, _ = read_yaml(path, None)
            return load_config(app.get("args"))
        except (OSError, ValueError, ValidationError, yaml.YAMLError) as err:
            raise UsageError(f"config {path}: {err}") from None

    def _windows(self, config: TandemConfig) -> tuple[int, int]:
        """(base, cap) of the job's requests in flight over all replicas: --window and
        --max-in-flight; either alone sets both (--window: up to the default cap too);
        neither: max_num_seqs per replica on the job's own replicas, 1/16 of it beside
        online traffic (--app: BENCHMARKS.md)."""
        per = config.model.max_num_seqs if self.args.app is None \
            else max(1, config.model.max_num_seqs // 16)
        default = per * (config.model_server.num_replicas or 1)
        cap, base = self.args.max_in_flight, self.args.window
        base = base if base is not None else cap if cap is not None else default
        return base, (cap if cap is not None else max(base, default))  # cmd.py: base <= cap

    def _plan(self, config: TandemConfig, todo: list, base: int, cap: int) -> int | None:
        """State the estimate against the deadline: the requests in flight to start with, or
        None: --strict-deadline and the estimate is late even with every lever."""
        deadline = self.args.deadline
        path = _profile_path(config)
        if path is None or not path.is_file():
            self.say(f"no step-cost profile for this device and model ({path}): no estimate")
            return base
        work = estimate.workload_of(((line.kind, line.body) for line in todo),
                                    config.model.default_max_tokens)
        profile = Profile.load(path)
        replicas = config.model_server.num_replicas or 1
        ladder = estimate.ladder(base, cap)
        ar = {w: estimate.estimate(profile, work, w, replicas)[AR1] for w in ladder}
        at_cap = estimate.estimate(profile, work, cap, replicas)
        fastest = min(at_cap, key=at_cap.__getitem__)
        self.choose = functools.partial(estimate.fastest_option, profile,
                                        math.ceil(cap / replicas))
        self.fast = self.choose(None)
        target = (deadline or 0.0) * PacerConfig().margin
        start = next((w for w in ladder if ar[w] <= target), cap)
        self.ar_estimate_s = ar[start]
        self.gain = lambda w: (estimate.estimate(profile, work, w, replicas)[AR1]
                               / at_cap[fastest])
        text = (f"estimate for {work.num_output_tokens} tokens at most ({path.name}, "
                f"{estimate.STEP_OVERHEAD_S * 1e3:g} ms a step for the serving path): AR "
                + ", ".join(f"{ar[w]:.1f} s at {w}" for w in dict.fromkeys((base, cap)))
                + f" in flight, fastest {fastest.key} {at_cap[fastest]:.1f} s at {cap}")
        if deadline is None:
            self.say(text + "; no deadline")
            return base
        if at_cap[fastest] <= deadline:
            how = (f"AR at {start} in flight" if ar[start] <= target else
                   f"{self.fast.key if self.fast else 'auto'} at {cap} in flight from the "
                   "start (AR alone is late)")
            self.say(text + f"; deadline {deadline:.0f} s: feasible by the profile, {how}; "
                     "steered on measured progress from there")
            return start
        self.say(text + f"; deadline {deadline:.0f} s CANNOT be met even with "
                 f"{fastest.key} at {cap} in flight (estimate ~{at_cap[fastest]:.0f} s, an "
                 "upper bound: every request to max_tokens)"
                 + ("; not starting (--strict-deadline)" if self.args.strict_deadline
                    else "; running best-effort"))
        return None if self.args.strict_deadline else cap

    def _execute(self, config: TandemConfig, todo: list, windows: tuple[int, int, int],
                 info: dict[str, Any]) -> int:
        args, (base, start, cap) = self.args, windows
        address = args.address or ("auto" if args.app else None)
        owns_ray = replicas.init_ray(address)
        is_local = owns_ray and address is None  # a Ray of our own: it goes down whole
        target = None
        try:
            target = (replicas.connect(args.app) if args.app
                      else replicas.start_own(config))
            model_name = config.model.name
            if not target.is_own:
                model_name = target.handle.model_info.remote().result()["id"]
            self.say(f"running on {'its own' if target.is_own else 'app ' + target.app} "
                     f"replicas ({target.num_replicas}), {base} to {cap} in flight "
                     f"(starting at {start}), "
                     f"priority {args.priority}")
            left = None if args.deadline is None else max(
                1e-3, args.deadline - (time.monotonic() - self.start))
            chat_max = config.model.default_max_tokens
            pace = Pacer(left, sum(estimate.planned_tokens(line.kind, line.body, chat_max)
                                   for line in todo), base, self.ar_estimate_s,
                         self.choose, max_window=cap, start_window=start, gain=self.gain)
            info["startup_s"] = round(time.monotonic() - self.start, 3)
            runner = JobRunner(Adapter(config, target.handle, model_name), None, pace,
                               self._progress(len(todo)),
                               RunOptions(args.priority, chat_max_tokens=chat_max,
                                          strict_deadline=args.strict_deadline),
                               say=self.say)
            interrupted = self._loop(runner, todo)
            info["run_s"] = round(pace.elapsed(), 3)
            info["behind_option"] = pace.fast.key if pace.fast else "auto"
            info["pace_switches"] = pace.num_switches
            info["pace_moves"] = pace.moves  # each lever moved, when
            info["max_in_flight_used"] = pace.max_window_used
            info["measured_late_s"] = None if pace.late_s is None else round(pace.late_s, 1)
            info["fast_paid"] = pace.fast_pays  # None: never measured against AR
        finally:
            if target is not None and not is_local:
                replicas.stop_own(target)  # a cluster we joined keeps running
            if owns_ray:
                import ray

                ray.shutdown()
        code = self._finish(runner.tally, info)
        return 130 if interrupted else 3 if runner.stopped_late else code

    def _progress(self, total: int) -> Progress:
        show = self.args.progress if self.args.progress is not None else sys.stderr.isatty()
        return Progress(total, self.args.deadline, show)

    def _loop(self, runner: JobRunner, todo: list) -> bool:
        """Run to the end; True when interrupted (Ctrl-C / SIGTERM)."""
        with journal.ResultWriter(self.args.output) as writer:
            runner.writer = writer
            try:
                asyncio.run(runner.run(todo))
            except KeyboardInterrupt:
                return True
            finally:
                runner.progress.close()
        return False

    def _finish(self, tally: Tally, info: dict[str, Any]) -> int:
        wall = time.monotonic() - self.start
        deadline = self.args.deadline
        s = summary(tally, {**info, "wall_s": round(wall, 3),
                            "met_deadline": None if deadline is None else wall <= deadline})
        self.summary = s
        if self.args.json:
            print(render(s), file=sys.stderr, flush=True)
            print(json.dumps(s), flush=True)
        else:
            print(render(s), flush=True)
        return 1 if tally.num_failed else 0


def _profile_path(config: TandemConfig) -> Path | None:
    """The step-cost profile the model server uses (cluster/model_server.py cost_profile):
    configured, else measured for this device and model (bench/profiles/), else on CPU the
    default; None where the server would calibrate at start-up."""
    m = config.model
    if m.slo_profile:
        return Path(m.slo_profile)
    from engine.cost_profile import find_profile

    found = find_profile(m.device, m.model_dir)
    return found if found is not None else DEFAULT_PROFILE if m.device == "cpu" else None
