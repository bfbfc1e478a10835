"""Who goes first: higher priority, then the earliest deadline (EDF).

The deadline is the request's next one: its first token's until that comes, then its last
token's. A request without any bound orders as if due `horizon_s` after arrival, so that it
ages instead of starving. A request whose deadline has already passed can no longer count
as good; within its priority it goes after those that still can (`demote_missed`), so
that under overload EDF does not spend the device on lost causes first (the domino
effect), yet it still runs whenever the others leave room.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.request_view import INF, RequestView

BEST_EFFORT_HORIZON_S = 60.0


def effective_deadline(v: RequestView, horizon_s: float = BEST_EFFORT_HORIZON_S) -> float:
    due = v.next_deadline
    return v.arrival_s + horizon_s if due == INF else due


def urgency_key(v: RequestView, now: float, demote_missed: bool = True,
                horizon_s: float = BEST_EFFORT_HORIZON_S) -> tuple[int, bool, float, float]:
    due = effective_deadline(v, horizon_s)
    return (-v.priority, demote_missed and due < now, due, v.arrival_s)


def by_urgency(views: Sequence[RequestView], now: float, demote_missed: bool = True,
               horizon_s: float = BEST_EFFORT_HORIZON_S) -> list[RequestView]:
    """Most urgent first."""
    return sorted(views, key=lambda v: urgency_key(v, now, demote_missed, horizon_s))
