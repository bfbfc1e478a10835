from policies.policy import SLOPolicy
from tests.policies.helpers import synthetic_profile, view


def test_victim_is_the_request_with_the_most_slack():
    p = SLOPolicy(synthetic_profile())
    views = [view("tight", deadline_ms=800.0, arrival_s=0.0),
             view("loose", deadline_ms=60_000.0, arrival_s=0.0),
             view("medium", deadline_ms=5_000.0, arrival_s=0.0)]
    assert p.victim(views, now=0.1).id == "loose"


def test_lower_priority_goes_first_and_nobody_when_no_candidates():
    p = SLOPolicy(synthetic_profile())
    views = [view("vip-loose", deadline_ms=60_000.0, arrival_s=0.0, priority=1),
             view("plain-tight", deadline_ms=800.0, arrival_s=0.0)]
    assert p.victim(views, now=0.1).id == "plain-tight"
    assert p.victim([], now=0.1) is None


def test_a_young_best_effort_request_has_more_slack_than_one_with_a_deadline():
    p = SLOPolicy(synthetic_profile())
    views = [view("slo", deadline_ms=30_000.0, arrival_s=0.0), view("be", arrival_s=0.0)]
    assert p.victim(views, now=0.1).id == "be"
