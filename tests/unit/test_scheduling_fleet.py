"""Given a queue's events, when `observe` folds them, then this is what the scheduler remembers."""

from __future__ import annotations

import pytest

from taskfold.core.scheduling.fleet import observe, record, replay, trip_reason
from taskfold.core.scheduling.model import Fleet, QueuePolicy, Session
from taskfold.core.state import EMPTY
from taskfold.core.testing import Events

POLICY = QueuePolicy(ewma_alpha=0.5, breaker_failures=2, breaker_cooldown_ms=1_000)


def remembered(events, policy=POLICY) -> Fleet:
    _, fleet, _ = replay(events, policy)
    return fleet


def test_a_completion_is_a_success_and_its_run_time_counts_from_the_start():
    e = Events()
    fleet = remembered([e.join("a1"), e.submit("t1"), e.assign("t1", "a1", at=2_000),
                        e.start("t1", "a1", at=2_100), e.complete("t1", "a1", at=2_400)])
    agent = record(fleet, "a1")
    assert (agent.success_ewma, agent.latency_ewma_ms, agent.completed) == (1.0, 300.0, 1)


def test_run_time_falls_back_to_the_assignment_when_no_start_was_reported():
    e = Events()
    fleet = remembered([e.join("a1"), e.submit("t1"), e.assign("t1", "a1", at=2_000),
                        e.complete("t1", "a1", at=2_500)])
    assert record(fleet, "a1").latency_ewma_ms == 500.0


def test_latency_is_an_ewma_of_run_times():
    e = Events()
    events = [e.join("a1"), e.submit("t1"), e.submit("t2"),
              e.assign("t1", "a1", at=2_000), e.complete("t1", "a1", at=2_100),
              e.assign("t2", "a1", at=3_000), e.complete("t2", "a1", at=3_300)]
    assert record(remembered(events), "a1").latency_ewma_ms == 0.5 * 300 + 0.5 * 100


@pytest.mark.parametrize("ending", ["fail", "expire", "time_out"])
def test_failures_timeouts_and_lease_expiries_are_failures(ending):
    e = Events()
    events = [e.join("a1"), e.submit("t1"), e.assign("t1", "a1"), e.start("t1", "a1"),
              getattr(e, ending)("t1", "a1")]
    agent = record(remembered(events), "a1")
    assert (agent.success_ewma, agent.consecutive_failures, agent.failed) == (0.5, 1, 1)


def test_a_success_resets_the_consecutive_failures():
    e = Events()
    events = [e.join("a1"), e.submit("t1", max_attempts=3), e.assign("t1", "a1"), e.fail("t1", "a1"),
              e.assign("t1", "a1", attempt=2, at=100_000), e.complete("t1", "a1", attempt=2)]
    agent = record(remembered(events), "a1")
    assert (agent.consecutive_failures, agent.success_ewma, agent.completed, agent.failed) == (0, 0.75, 1, 1)


def test_an_agent_lost_fails_every_attempt_it_held_and_a_drained_one_fails_none():
    e = Events()
    given = [e.join("a1", slots=2), e.join("a2", slots=2), e.submit("t1"), e.submit("t2"),
             e.submit("t3"), e.assign("t1", "a1"), e.assign("t2", "a1"), e.assign("t3", "a2")]
    fleet = remembered(given + [e.leave("a1", reason="lost"), e.leave("a2", reason="drained")])
    assert record(fleet, "a1").failed == 2
    assert record(fleet, "a1").quarantined_until is not None  # two failures reach breaker_failures=2
    assert (record(fleet, "a2").failed, record(fleet, "a2").consecutive_failures) == (0, 0)


def test_rejected_and_duplicate_events_change_nothing():
    e = Events()
    state, fleet, _ = replay([e.join("a1"), e.submit("t1")], POLICY)
    stale = e.complete("t1", "a1")  # nothing is assigned: rejected
    after, _, verdicts = replay([stale], POLICY, state, fleet)
    assert verdicts[0].outcome == "rejected"
    assert observe(fleet, state, after, stale, verdicts[0], POLICY) == fleet
    join = e.join("a1")
    state, fleet, _ = replay([join], POLICY, state, fleet)
    again, fleet_again, verdicts = replay([join], POLICY, state, fleet)
    assert verdicts[0].outcome == "duplicate" and fleet_again == fleet


def test_an_accepted_assignment_moves_the_cursor_and_pins_the_session():
    e = Events()
    fleet = remembered([e.join("a1"), e.submit("t1", session_id="s1"), e.assign("t1", "a1", at=5_000),
                        e.assign("t1", "a1", at=5_001)])  # the second is rejected: no move
    assert fleet.cursor == 1
    assert fleet.sessions["s1"] == Session("a1", 5_000)


def test_k_consecutive_failures_quarantine_for_the_cooldown():
    e = Events()
    events = [e.join("a1", slots=2), e.submit("t1"), e.submit("t2"), e.assign("t1", "a1"),
              e.assign("t2", "a1"), e.fail("t1", "a1"), e.fail("t2", "a1", at=7_000)]
    fleet = remembered(events)
    assert record(fleet, "a1").quarantined_until == 8_000
    assert record(remembered(events[:-1]), "a1").quarantined_until is None


def test_the_breaker_keeps_what_tripped_it_when_a_late_success_resets_the_counter():
    e = Events()
    events = [e.join("a1", slots=3), e.submit("t1"), e.submit("t2"), e.submit("t3"), e.assign("t1", "a1"),
              e.assign("t2", "a1"), e.assign("t3", "a1"), e.fail("t1", "a1", at=6_000),
              e.leave("a1", reason="lost", at=7_000)]
    agent = record(remembered(events), "a1")
    # The loss ended t2 and t3: the second failure opened the breaker, the third (same time) is its last.
    assert (agent.quarantined_until, agent.tripped_failures, agent.tripped_task, agent.tripped_at,
            agent.tripped_by) == (8_000, 3, "t3", 7_000, "agent lost")
    events = [e.join("a1", slots=3), e.submit("t1"), e.submit("t2"), e.submit("t3"), e.assign("t1", "a1"),
              e.assign("t2", "a1"), e.assign("t3", "a1"), e.fail("t1", "a1", at=6_000),
              e.expire("t2", "a1", at=7_000), e.complete("t3", "a1", at=7_100)]
    agent = record(remembered(events), "a1")
    assert (agent.consecutive_failures, agent.quarantined_until) == (0, 8_000)
    assert (agent.tripped_failures, agent.tripped_task, agent.tripped_by) == (2, "t2", "lease expired")
    assert trip_reason(agent) == "2 consecutive failures, the last on task t2 (lease expired) at 7000"


def quarantined_then_probed(e: Events) -> list:
    return [e.join("a1", slots=2), e.submit("t1"), e.submit("t2"), e.submit("t3"),
            e.assign("t1", "a1"), e.assign("t2", "a1"), e.fail("t1", "a1"), e.fail("t2", "a1", at=7_000),
            e.assign("t3", "a1", at=8_000, strategy="probe")]


def test_the_first_assignment_after_quarantine_is_the_probe():
    e = Events()
    assert record(remembered(quarantined_then_probed(e)), "a1").probe_task == "t3"


def test_a_probe_success_lifts_the_quarantine():
    e = Events()
    fleet = remembered(quarantined_then_probed(e) + [e.complete("t3", "a1", at=8_100)])
    agent = record(fleet, "a1")
    assert (agent.quarantined_until, agent.probe_task, agent.consecutive_failures) == (None, None, 0)


def test_a_probe_failure_quarantines_again():
    e = Events()
    fleet = remembered(quarantined_then_probed(e) + [e.time_out("t3", "a1", at=8_100)])
    agent = record(fleet, "a1")
    assert (agent.quarantined_until, agent.probe_task) == (9_100, None)
    assert trip_reason(agent) == "its probe task t3 timed out at 8100"


def test_a_cancelled_probe_lets_another_probe_through():
    e = Events()
    fleet = remembered(quarantined_then_probed(e) + [e.cancel("t3"), e.cancelled("t3", "a1")])
    agent = record(fleet, "a1")
    assert (agent.quarantined_until, agent.probe_task) == (8_000, None)


def test_observe_ignores_events_that_are_not_its_business():
    e = Events()
    submit = e.submit("t1")
    after, _, verdicts = replay([submit], POLICY)
    assert verdicts[0].accepted
    assert observe(Fleet(), EMPTY, after, submit, verdicts[0], POLICY) == Fleet()
