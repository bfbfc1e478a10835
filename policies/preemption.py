"""Whom to preempt when the KV cache runs dry: the lowest priority, then the most slack.

Slack is the time a request would have to spare if it decoded the rest of its output at
its predicted pace; a request without bounds counts as due `horizon_s` after arrival, so
it is preempted first while young but not forever. Ties go to the newest arrival (least
work lost to recomputation is not known here; the newest usually has the least).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from policies.ordering import BEST_EFFORT_HORIZON_S, effective_deadline
from policies.request_view import RequestView


def slack_of(v: RequestView, now: float, time_per_token: float,
             horizon_s: float = BEST_EFFORT_HORIZON_S) -> float:
    if v.has_slo:
        return v.slack(now, time_per_token)
    return effective_deadline(v, horizon_s) - now - v.remaining * time_per_token


def victim_order(candidates: Sequence[RequestView], now: float,
                 time_per_token: Callable[[RequestView], float],
                 horizon_s: float = BEST_EFFORT_HORIZON_S) -> list[RequestView]:
    """The candidates, the one to preempt first at the front."""
    def key(v: RequestView) -> tuple[int, float, float]:
        return (-v.priority, slack_of(v, now, time_per_token(v), horizon_s), v.arrival_s)
    return sorted(candidates, key=key, reverse=True)


def choose_victim(candidates: Sequence[RequestView], now: float,
                  time_per_token: Callable[[RequestView], float],
                  horizon_s: float = BEST_EFFORT_HORIZON_S) -> RequestView | None:
    return next(iter(victim_order(candidates, now, time_per_token, horizon_s)), None)
