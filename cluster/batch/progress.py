"""What a batch job tells its user: a tqdm bar while it runs (done/total, tokens/s, ETA,
projected finish against the deadline) and a summary at the end (done, refused, failed,
bad lines, wall time, forwards and tokens per forward by mode, device work)."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from cluster.batch.adapter import Answer


@dataclass
class Tally:
    """Counts over this run's answers."""

    num_done: int = 0  # 2xx
    num_refused: int = 0  # 4xx: the API would refuse the body
    num_failed: int = 0  # 5xx or no answer, after the retries
    num_retries: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    forwards: Counter = field(default_factory=Counter)  # by mode
    mode_tokens: Counter = field(default_factory=Counter)  # output tokens by mode
    device_tokens: Counter = field(default_factory=Counter)  # through the model, by mode

    @property
    def num_finished(self) -> int:
        return self.num_done + self.num_refused + self.num_failed

    def add(self, answer: Answer) -> None:
        code = answer.status_code
        if code is not None and code < 400:
            self.num_done += 1
        elif code is not None and code < 500:
            self.num_refused += 1
        else:
            self.num_failed += 1
        self.device_tokens.update(answer.device_tokens)
        body = answer.body or {}
        usage = body.get("usage") or {}
        self.prompt_tokens += usage.get("prompt_tokens", 0)
        self.output_tokens += usage.get("completion_tokens", 0)
        tandem = body.get("tandem") or {}
        self.forwards.update(tandem.get("modes") or {})
        self.mode_tokens.update(tandem.get("tokens_by_mode") or {})

    def by_mode(self) -> dict[str, dict[str, float]]:
        out = {}
        for mode in sorted(set(self.forwards) | set(self.mode_tokens)):
            f, t = self.forwards[mode], self.mode_tokens[mode]
            out[mode] = {"forwards": f, "tokens": t,
                         "tokens_per_forward": round(t / f, 4) if f else 0.0}
        return out


class Progress:
    def __init__(self, total: int, deadline_s: float | None, enabled: bool = True) -> None:
        self.deadline_s = deadline_s
        self.bar = tqdm(total=total, unit="req", dynamic_ncols=True, file=sys.stderr,
                        disable=not enabled, smoothing=0.1)

    def update(self, tally: Tally, elapsed_s: float, projected_s: float | None) -> None:
        post = {"tok/s": f"{tally.output_tokens / max(elapsed_s, 1e-9):.1f}"}
        if tally.num_refused + tally.num_failed:
            post["refused"] = str(tally.num_refused)
            post["failed"] = str(tally.num_failed)
        if projected_s is not None:
            post["finish"] = _clock(projected_s)
            if self.deadline_s is not None:
                ok = projected_s <= self.deadline_s
                post["deadline"] = f"{_clock(self.deadline_s)} {'ok' if ok else 'LATE'}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


def summary(tally: Tally, info: dict[str, Any]) -> dict[str, Any]:
    """The job's summary as one JSON-able object (info: inputs, timing, deadline)."""
    device = dict(tally.device_tokens)
    out = {**info, "done": tally.num_done, "refused": tally.num_refused,
           "failed": tally.num_failed, "retries": tally.num_retries,
           "prompt_tokens": tally.prompt_tokens, "output_tokens": tally.output_tokens,
           "tokens_per_s": round(tally.output_tokens / max(info.get("run_s", 0), 1e-9), 2),
           "modes": tally.by_mode()}
    if device:
        decode = sum(v for k, v in device.items() if k != "prefill")
        out["device_tokens"] = device
        out["device_tokens_per_output_token"] = round(
            decode / max(1, tally.output_tokens), 4)
    return out


def render(s: dict[str, Any]) -> str:
    """The summary for people."""
    lines = [f"tandem batch: {s['done']} done, {s['refused']} refused (4xx), "
             f"{s['failed']} failed, {s['errors']} bad lines, {s['skipped']} already in "
             f"the output; {s['wall_s']:.1f} s ({s.get('startup_s', 0):.1f} s to start), "
             f"{s['output_tokens']} tokens ({s['tokens_per_s']:.1f}/s)"]
    if s.get("deadline_s") is not None:
        verdict = "met" if s["met_deadline"] else "MISSED"
        lines.append(f"  deadline {s['deadline_s']:.0f} s: {verdict}")
    for mode, m in s["modes"].items():
        lines.append(f"  {mode:<15} {m['forwards']:>7} forwards {m['tokens']:>8} tokens "
                     f"{m['tokens_per_forward']:>6.2f} tokens/forward")
    if "device_tokens" in s:
        lines.append(f"  device work: {s['device_tokens_per_output_token']:.2f} decode "
                     f"tokens through the model per output token "
                     f"(by mode: {s['device_tokens']})")
    if s.get("errors"):
        lines.append(f"  bad lines listed in {s['errors_file']}")
    return "\n".join(lines)
