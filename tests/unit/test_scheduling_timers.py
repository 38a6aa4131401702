"""Given a queue's events, when the clock reads `now`, then these expirations (each one
accepted by the fold)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from taskfold.core.events import AgentLeft, Event, LeaveReason, TaskLeaseExpired, TaskTimedOut
from taskfold.core.policies import derived_event_id
from taskfold.core.scheduling.fleet import replay
from taskfold.core.scheduling.model import QueuePolicy
from taskfold.core.scheduling.timers import expirations
from taskfold.core.state import QueueState, TaskState
from taskfold.core.testing import Events

POLICY = QueuePolicy(lease_ms=10_000, agent_lost_ms=60_000)


def expired(
    events: Sequence[Event], *, now: int, heartbeats: Mapping[str, int], policy: QueuePolicy = POLICY
) -> tuple[list[Event], QueueState]:
    """Expirations over the fold of `events`, checked accepted in order; and the state after them."""
    state, fleet, _ = replay(events, policy)
    found = expirations(state, fleet, policy, queue="q", now_ms=now, heartbeats=heartbeats)
    after, _, verdicts = replay(found, policy, state, fleet)
    assert [str(v) for v in verdicts] == ["accepted"] * len(found)
    return found, after


def kinds(found: Sequence[Event]) -> list[tuple[str, str]]:
    return [(type(ev).__name__, ev.task or ev.agent or "") for ev in found]


def held(e: Events, *, started: bool = False, timeout_ms: int = 300_000) -> list[Event]:
    events = [e.join("a1", at=1_000), e.submit("t1", at=1_000, timeout_ms=timeout_ms), e.assign("t1", "a1", at=2_000)]
    return events + ([e.start("t1", "a1", at=3_000)] if started else [])


def test_a_lease_expires_when_the_holder_is_silent_past_lease_ms():
    e = Events()
    found, after = expired(held(e), now=15_001, heartbeats={"a1": 5_000})
    assert kinds(found) == [("TaskLeaseExpired", "t1")]
    assert isinstance(found[0], TaskLeaseExpired) and found[0].attempt == 1 and found[0].agent_id == "a1"
    assert after.task("t1").state == TaskState.queued


def test_a_lease_holds_while_heartbeats_or_the_attempt_itself_are_recent():
    e = Events()
    assert expired(held(e), now=15_000, heartbeats={"a1": 5_000})[0] == []  # exactly lease_ms: still held
    assert expired(held(e), now=20_000, heartbeats={"a1": 12_000})[0] == []
    # No heartbeat at all: the assignment (2_000) and the start (3_000) are signs of life.
    assert expired(held(Events()), now=12_000, heartbeats={})[0] == []
    assert expired(held(Events(), started=True), now=13_000, heartbeats={})[0] == []
    assert kinds(expired(held(Events(), started=True), now=13_001, heartbeats={})[0]) == [("TaskLeaseExpired", "t1")]


def test_a_running_attempt_past_its_timeout_times_out():
    e = Events()
    events = held(e, started=True, timeout_ms=5_000)
    assert expired(events, now=8_000, heartbeats={"a1": 8_000})[0] == []
    found, after = expired(events, now=8_001, heartbeats={"a1": 8_000})
    assert kinds(found) == [("TaskTimedOut", "t1")]
    assert after.task("t1").state == TaskState.retry_wait


def test_an_assigned_attempt_that_never_started_does_not_time_out():
    e = Events()
    assert expired(held(e, timeout_ms=1_000), now=9_000, heartbeats={"a1": 9_000})[0] == []


def test_timeout_wins_when_the_lease_is_also_gone():
    e = Events()
    found, _ = expired(held(e, started=True, timeout_ms=5_000), now=20_000, heartbeats={"a1": 3_000})
    assert kinds(found) == [("TaskTimedOut", "t1")]


def test_an_agent_silent_past_agent_lost_ms_is_declared_lost_and_its_leases_are_left_to_the_fold():
    e = Events()
    events = [e.join("a1", slots=2, at=1_000), e.join("a2", at=1_000), e.submit("t1"), e.submit("t2"),
              e.submit("t3"), e.assign("t1", "a1"), e.assign("t2", "a1"), e.assign("t3", "a2", at=50_000)]
    found, after = expired(events, now=70_000, heartbeats={"a1": 5_000, "a2": 65_000})
    assert kinds(found) == [("AgentLeft", "a1")]
    [left] = found
    assert isinstance(left, AgentLeft) and left.reason == LeaveReason.lost
    assert left.event_id == derived_event_id("q/a1/1000", 3)
    assert [after.task(t).state for t in ("t1", "t2", "t3")] == [TaskState.queued, TaskState.queued, TaskState.assigned]
    assert not after.member("a1").active


def test_a_just_joined_agent_is_not_lost():
    e = Events()
    events = [e.join("a1", at=1_000), e.join("a1", at=65_000)]
    assert expired(events, now=70_000, heartbeats={"a1": 2_000})[0] == []


def test_ids_are_derived_so_two_workers_write_the_same_events():
    e = Events()
    events = held(e, started=True, timeout_ms=5_000) + [e.submit("t2", at=3_000), e.join("a2", at=3_000),
                                                        e.assign("t2", "a2", at=3_000)]
    beats = {"a1": 3_000, "a2": 3_000}
    found, _ = expired(events, now=20_000, heartbeats=beats)
    assert [ev.event_id for ev in found] == [derived_event_id("q/t1/1", 2), derived_event_id("q/t2/1", 1)]
    assert isinstance(found[0], TaskTimedOut)
    state, fleet, _ = replay(events, POLICY)
    twice = found + expirations(state, fleet, POLICY, queue="q", now_ms=20_001, heartbeats=beats)
    _, _, verdicts = replay(twice, POLICY, state, fleet)
    assert [v.outcome for v in verdicts] == ["accepted", "accepted", "duplicate", "duplicate"]


def test_nothing_expires_in_a_quiet_queue():
    e = Events()
    assert expired([e.join("a1"), e.submit("t1")], now=5_000, heartbeats={"a1": 5_000})[0] == []


def test_an_assignment_its_live_agent_never_started_goes_back_after_start_within_ms():
    # Heartbeats keep the lease alive, so without this rule a missed assignment stays
    # assigned for as long as its agent lives.
    policy = QueuePolicy(lease_ms=10_000, agent_lost_ms=60_000, start_within_ms=20_000)
    assert expired(held(Events()), now=22_000, heartbeats={"a1": 21_000}, policy=policy)[0] == []
    found, after = expired(held(Events()), now=22_001, heartbeats={"a1": 22_000}, policy=policy)
    assert kinds(found) == [("TaskLeaseExpired", "t1")]
    assert after.task("t1").state == TaskState.queued


def test_a_started_attempt_is_not_judged_by_start_within_ms():
    policy = QueuePolicy(lease_ms=10_000, agent_lost_ms=60_000, start_within_ms=1_000)
    assert expired(held(Events(), started=True), now=50_000, heartbeats={"a1": 50_000}, policy=policy)[0] == []


def test_finished_tasks_are_not_looked_at_by_the_timer():
    e = Events()
    done = [e.join("a1", at=1_000), e.submit("t1", at=1_000), e.assign("t1", "a1", at=1_000),
            e.start("t1", "a1", at=1_000), e.complete("t1", "a1", at=1_000)]
    assert expired(done, now=10_000_000, heartbeats={"a1": 10_000_000})[0] == []
