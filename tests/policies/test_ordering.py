from policies.ordering import by_urgency
from tests.policies.helpers import view


def ids(views):
    return [v.id for v in views]


def test_earliest_deadline_first():
    views = [view("late", deadline_ms=9000.0, arrival_s=0.0),
             view("soon", deadline_ms=1000.0, arrival_s=0.0),
             view("mid", deadline_ms=5000.0, arrival_s=0.0)]
    assert ids(by_urgency(views, now=0.5)) == ["soon", "mid", "late"]


def test_priority_before_deadline():
    views = [view("urgent-low", deadline_ms=100.0, arrival_s=0.0, priority=0),
             view("relaxed-high", deadline_ms=9000.0, arrival_s=0.0, priority=5)]
    assert ids(by_urgency(views, now=0.0)) == ["relaxed-high", "urgent-low"]


def test_first_token_deadline_counts_until_the_first_token():
    # Waiting for its first token, due at 0.2 s; the other's last token is due at 1 s.
    waiting = view("waiting", ttft_ms=200.0, tpot_ms=100.0, num_output=0, arrival_s=0.0)
    running = view("running", deadline_ms=1000.0, arrival_s=0.0)
    assert ids(by_urgency([running, waiting], now=0.0)) == ["waiting", "running"]


def test_missed_deadlines_go_last_within_their_priority_and_best_effort_ages():
    missed = view("missed", deadline_ms=100.0, arrival_s=0.0)
    live = view("live", deadline_ms=5000.0, arrival_s=0.0)
    old_best_effort = view("old", arrival_s=-100.0)  # due at -40 s by the 60 s horizon
    young_best_effort = view("young", arrival_s=0.0)  # due at 60 s
    order = ids(by_urgency([young_best_effort, missed, old_best_effort, live], now=1.0))
    assert order == ["live", "young", "old", "missed"]
    assert ids(by_urgency([missed, live], now=1.0, demote_missed=False)) == ["missed", "live"]
