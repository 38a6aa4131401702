"""Given events, when one more arrives, then this verdict and this task state: every rule of the fold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from taskfold.core.events import Backoff, Event
from taskfold.core.fold import evolve, fold
from taskfold.core.state import TaskState
from taskfold.core.testing import Events

Script = Callable[[Events], list[Event]]


@dataclass(frozen=True)
class Case:
    name: str
    given: Script
    when: Callable[[Events], Event]
    verdict: str
    state: TaskState | None = None
    reason: str = ""
    task: str = "t1"


def seated(e: Events, slots: int = 1, **submit) -> list[Event]:
    return [e.join("a1", slots=slots), e.submit("t1", **submit)]


def assigned(e: Events, **submit) -> list[Event]:
    return seated(e, **submit) + [e.assign("t1", "a1")]


def running(e: Events, **submit) -> list[Event]:
    return assigned(e, **submit) + [e.start("t1", "a1")]


def lost_twice(e: Events, **submit) -> list[Event]:
    """Two attempts in a row that lost their holder: a lease expiry, then the agent declared lost."""
    return running(e, **submit) + [e.expire("t1", "a1"), e.assign("t1", "a1", attempt=2),
                                   e.leave("a1", reason="lost"), e.join("a1")]


CASES = [
    # submit
    Case("submit queues a task", lambda e: [], lambda e: e.submit("t1"), "accepted", TaskState.queued),
    Case("submit with not_before ahead is scheduled", lambda e: [],
         lambda e: e.submit("t1", at=100, not_before=500), "accepted", TaskState.scheduled),
    Case("submit with not_before passed is queued", lambda e: [],
         lambda e: e.submit("t1", at=600, not_before=500), "accepted", TaskState.queued),
    Case("submit with pending dependency is blocked", lambda e: [e.submit("t0")],
         lambda e: e.submit("t1", depends_on=["t0"]), "accepted", TaskState.blocked),
    Case("submit with unknown dependency is blocked", lambda e: [],
         lambda e: e.submit("t1", depends_on=["elsewhere"]), "accepted", TaskState.blocked),
    Case("submit with completed dependency is queued",
         lambda e: [e.join("a1"), e.submit("t0"), e.assign("t0", "a1"), e.complete("t0", "a1")],
         lambda e: e.submit("t1", depends_on=["t0"]), "accepted", TaskState.queued),
    Case("submit with a dead dependency is cancelled",
         lambda e: [e.join("a1"), e.submit("t0"), e.cancel("t0")],
         lambda e: e.submit("t1", depends_on=["t0"]), "accepted", TaskState.cancelled),
    Case("submit of an existing task id is rejected", lambda e: [e.submit("t1")],
         lambda e: e.submit("t1"), "rejected", TaskState.queued, "already submitted"),
    Case("submit depending on itself is rejected", lambda e: [],
         lambda e: e.submit("t1", depends_on=["t1"]), "rejected", None, "itself"),
    Case("submit reusing an idempotency key is a duplicate", lambda e: [e.submit("t1", idempotency_key="k")],
         lambda e: e.submit("t2", idempotency_key="k"), "duplicate", TaskState.queued, "idempotency key"),
    # dependencies
    Case("dependency satisfied releases the task", lambda e: [e.submit("t1", depends_on=["x"])],
         lambda e: e.resolved("t1", "x"), "accepted", TaskState.queued),
    Case("dependency failed cancels the task", lambda e: [e.submit("t1", depends_on=["x"])],
         lambda e: e.resolved("t1", "x", outcome="failed"), "accepted", TaskState.cancelled),
    Case("one of two dependencies keeps it blocked", lambda e: [e.submit("t1", depends_on=["x", "y"])],
         lambda e: e.resolved("t1", "x"), "accepted", TaskState.blocked),
    Case("dependency it does not wait on is rejected", lambda e: [e.submit("t1")],
         lambda e: e.resolved("t1", "x"), "rejected", TaskState.queued, "not waiting"),
    Case("dependency satisfied before not_before schedules", lambda e: [e.submit("t1", at=10, depends_on=["x"], not_before=900)],
         lambda e: e.resolved("t1", "x", at=20), "accepted", TaskState.scheduled),
    # assignment
    Case("assign a queued task", seated, lambda e: e.assign("t1", "a1"), "accepted", TaskState.assigned),
    Case("assign to an agent that never joined", lambda e: [e.submit("t1")],
         lambda e: e.assign("t1", "a1"), "rejected", TaskState.queued, "has not joined"),
    Case("assign to an agent that left", lambda e: seated(e) + [e.leave("a1")],
         lambda e: e.assign("t1", "a1"), "rejected", TaskState.queued, "has left"),
    Case("assign beyond the agent's slots", lambda e: seated(e) + [e.submit("t2"), e.assign("t2", "a1")],
         lambda e: e.assign("t1", "a1"), "rejected", TaskState.queued, "slots"),
    Case("assign with a wrong attempt number", seated,
         lambda e: e.assign("t1", "a1", attempt=2), "rejected", TaskState.queued, "not the next attempt"),
    Case("assign an assigned task", assigned,
         lambda e: e.assign("t1", "a1", attempt=2), "rejected", TaskState.assigned, "held by a1"),
    Case("assign a blocked task", lambda e: [e.join("a1"), e.submit("t1", depends_on=["x"])],
         lambda e: e.assign("t1", "a1"), "rejected", TaskState.blocked, "blocked"),
    Case("assign a scheduled task before it is due", lambda e: [e.join("a1"), e.submit("t1", at=10, not_before=500)],
         lambda e: e.assign("t1", "a1", at=499), "rejected", TaskState.scheduled, "until 500"),
    Case("assign a scheduled task once due", lambda e: [e.join("a1"), e.submit("t1", at=10, not_before=500)],
         lambda e: e.assign("t1", "a1", at=500), "accepted", TaskState.assigned),
    Case("assign without a required capability",
         lambda e: [e.join("a1", capabilities=["cpu"]), e.submit("t1", required_capabilities=["gpu"])],
         lambda e: e.assign("t1", "a1"), "rejected", TaskState.queued, "capabilities"),
    Case("assign with a mismatched label",
         lambda e: [e.join("a1", labels={"region": "eu"}), e.submit("t1", labels={"region": "us"})],
         lambda e: e.assign("t1", "a1"), "rejected", TaskState.queued, "label region=us"),
    Case("assign past a concurrency limit",
         lambda e: [e.join("a1", slots=2), e.submit("t0", concurrency_key="c"), e.assign("t0", "a1"),
                    e.submit("t1", concurrency_key="c")],
         lambda e: e.assign("t1", "a1"), "rejected", TaskState.queued, "concurrency key"),
    Case("assign after the key was freed",
         lambda e: [e.join("a1", slots=2), e.submit("t0", concurrency_key="c"), e.assign("t0", "a1"),
                    e.complete("t0", "a1"), e.submit("t1", concurrency_key="c")],
         lambda e: e.assign("t1", "a1"), "accepted", TaskState.assigned),
    Case("assign an unknown task", lambda e: [e.join("a1")],
         lambda e: e.assign("t1", "a1"), "rejected", None, "unknown task"),
    # start and reports
    Case("start by the holder", assigned, lambda e: e.start("t1", "a1"), "accepted", TaskState.running),
    Case("start twice", running, lambda e: e.start("t1", "a1"), "rejected", TaskState.running, "already started"),
    Case("start by another agent", lambda e: assigned(e) + [e.join("a2")],
         lambda e: e.start("t1", "a2"), "rejected", TaskState.assigned, "does not hold"),
    Case("complete by the holder", running, lambda e: e.complete("t1", "a1"), "accepted", TaskState.completed),
    Case("complete without start", assigned, lambda e: e.complete("t1", "a1"), "accepted", TaskState.completed),
    Case("complete a stale attempt", lambda e: running(e) + [e.expire("t1", "a1"), e.assign("t1", "a1", attempt=2)],
         lambda e: e.complete("t1", "a1", attempt=1), "rejected", TaskState.assigned, "stale attempt 1"),
    Case("complete from a non-holder", lambda e: running(e) + [e.join("a2")],
         lambda e: e.complete("t1", "a2"), "rejected", TaskState.running, "does not hold"),
    Case("complete after the attempt ended", lambda e: running(e) + [e.fail("t1", "a1")],
         lambda e: e.complete("t1", "a1"), "rejected", TaskState.retry_wait, "is over"),
    Case("retryable failure waits to retry", running, lambda e: e.fail("t1", "a1"), "accepted", TaskState.retry_wait),
    Case("non-retryable failure dead-letters", running,
         lambda e: e.fail("t1", "a1", retryable=False), "accepted", TaskState.dead_lettered),
    Case("failure on the last attempt dead-letters", lambda e: running(e, max_attempts=1),
         lambda e: e.fail("t1", "a1"), "accepted", TaskState.dead_lettered),
    Case("lease expiry requeues at once", running, lambda e: e.expire("t1", "a1"), "accepted", TaskState.queued),
    Case("lease expiry on the last attempt requeues uncharged", lambda e: running(e, max_attempts=1),
         lambda e: e.expire("t1", "a1"), "accepted", TaskState.queued),
    Case("an assignment never started is taken back uncharged", lambda e: assigned(e, max_attempts=1),
         lambda e: e.expire("t1", "a1"), "accepted", TaskState.queued),
    Case("agent lost on the last attempt requeues uncharged", lambda e: running(e, max_attempts=1),
         lambda e: e.leave("a1", reason="lost"), "accepted", TaskState.queued),
    Case("a third holder lost in a row dead-letters", lambda e: lost_twice(e) + [e.assign("t1", "a1", attempt=3)],
         lambda e: e.expire("t1", "a1", attempt=3), "accepted", TaskState.dead_lettered),
    Case("a third agent lost in a row dead-letters", lambda e: lost_twice(e) + [e.assign("t1", "a1", attempt=3)],
         lambda e: e.leave("a1", reason="lost"), "accepted", TaskState.dead_lettered),
    Case("a failure breaks the row of lost holders",
         lambda e: lost_twice(e) + [e.assign("t1", "a1", attempt=3), e.fail("t1", "a1", attempt=3),
                                    e.assign("t1", "a1", attempt=4, at=e.now + 10_000)],
         lambda e: e.expire("t1", "a1", attempt=4), "accepted", TaskState.queued),
    Case("a drain breaks the row of lost holders",
         lambda e: lost_twice(e) + [e.assign("t1", "a1", attempt=3), e.leave("a1"), e.join("a1"),
                                    e.assign("t1", "a1", attempt=4)],
         lambda e: e.expire("t1", "a1", attempt=4), "accepted", TaskState.queued),
    Case("a redrive breaks the row of lost holders",
         lambda e: lost_twice(e) + [e.assign("t1", "a1", attempt=3), e.expire("t1", "a1", attempt=3),
                                    e.redrive("t1"), e.assign("t1", "a1", attempt=4)],
         lambda e: e.expire("t1", "a1", attempt=4), "accepted", TaskState.queued),
    Case("lost holders leave max_attempts to failures",
         lambda e: lost_twice(e, max_attempts=1) + [e.assign("t1", "a1", attempt=3)],
         lambda e: e.fail("t1", "a1", attempt=3), "accepted", TaskState.dead_lettered),
    Case("a timeout on the last attempt dead-letters (charged)", lambda e: running(e, max_attempts=1),
         lambda e: e.time_out("t1", "a1"), "accepted", TaskState.dead_lettered),
    Case("lease expiry for a non-holder is rejected", lambda e: running(e) + [e.join("a2")],
         lambda e: e.expire("t1", "a2"), "rejected", TaskState.running, "does not hold"),
    Case("timeout waits to retry", running, lambda e: e.time_out("t1", "a1"), "accepted", TaskState.retry_wait),
    Case("retry is assignable once due",
         lambda e: running(e, backoff=Backoff(initial_ms=100, jitter=0)) + [e.fail("t1", "a1", at=2000)],
         lambda e: e.assign("t1", "a1", attempt=2, at=2100), "accepted", TaskState.assigned),
    Case("retry is not assignable early",
         lambda e: running(e, backoff=Backoff(initial_ms=100, jitter=0)) + [e.fail("t1", "a1", at=2000)],
         lambda e: e.assign("t1", "a1", attempt=2, at=2099), "rejected", TaskState.retry_wait, "until 2100"),
    # cancel
    Case("cancel a queued task is immediate", seated, lambda e: e.cancel("t1"), "accepted", TaskState.cancelled),
    Case("cancel a blocked task is immediate", lambda e: [e.submit("t1", depends_on=["x"])],
         lambda e: e.cancel("t1"), "accepted", TaskState.cancelled),
    Case("cancel a running task waits", running, lambda e: e.cancel("t1"), "accepted", TaskState.running),
    Case("agent acknowledges a cancel", lambda e: running(e) + [e.cancel("t1")],
         lambda e: e.cancelled("t1", "a1"), "accepted", TaskState.cancelled),
    Case("completion after a cancel request loses the race", lambda e: running(e) + [e.cancel("t1")],
         lambda e: e.complete("t1", "a1"), "rejected", TaskState.running, "cancel"),
    Case("cancel after completion loses the race", lambda e: running(e) + [e.complete("t1", "a1")],
         lambda e: e.cancel("t1"), "rejected", TaskState.completed, "already completed"),
    Case("lease expiry after a cancel request cancels", lambda e: running(e) + [e.cancel("t1")],
         lambda e: e.expire("t1", "a1"), "accepted", TaskState.cancelled),
    Case("failure after a cancel request cancels", lambda e: running(e) + [e.cancel("t1")],
         lambda e: e.fail("t1", "a1"), "accepted", TaskState.cancelled),
    Case("cancel acknowledged without a request", running,
         lambda e: e.cancelled("t1", "a1"), "rejected", TaskState.running, "no cancel"),
    Case("second cancel request", lambda e: running(e) + [e.cancel("t1")],
         lambda e: e.cancel("t1"), "rejected", TaskState.running, "already requested"),
    # terminal absorption and redrive
    Case("completed absorbs a failure", lambda e: running(e) + [e.complete("t1", "a1")],
         lambda e: e.fail("t1", "a1"), "rejected", TaskState.completed, "already completed"),
    Case("completed absorbs an assignment", lambda e: running(e) + [e.complete("t1", "a1")],
         lambda e: e.assign("t1", "a1", attempt=2), "rejected", TaskState.completed, "already completed"),
    Case("cancelled absorbs a submit", lambda e: seated(e) + [e.cancel("t1")],
         lambda e: e.submit("t1"), "rejected", TaskState.cancelled, "already submitted"),
    Case("redrive a dead letter", lambda e: running(e, max_attempts=1) + [e.fail("t1", "a1")],
         lambda e: e.redrive("t1"), "accepted", TaskState.queued),
    Case("redrive a completed task", lambda e: running(e) + [e.complete("t1", "a1")],
         lambda e: e.redrive("t1"), "rejected", TaskState.completed, "only dead-lettered"),
    # duplicates
    Case("the same event twice is a duplicate", lambda e: [e.submit("t1")],
         lambda e: _replay(e, 0), "duplicate", TaskState.queued, "already applied"),
    Case("a redelivered completion is a duplicate", lambda e: running(e) + [e.complete("t1", "a1")],
         lambda e: _replay(e, -1), "duplicate", TaskState.completed),
    # membership
    Case("leaving requeues held tasks", running, lambda e: e.leave("a1", reason="lost"), "accepted", TaskState.queued),
    Case("leaving twice is rejected", lambda e: running(e) + [e.leave("a1")],
         lambda e: e.leave("a1"), "rejected", TaskState.queued, "already left"),
    Case("leaving without joining is rejected", lambda e: [e.submit("t1")],
         lambda e: e.leave("a9"), "rejected", TaskState.queued, "has not joined"),
]

_GIVEN: dict[int, list[Event]] = {}


def _replay(e: Events, index: int) -> Event:
    return _GIVEN[id(e)][index]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_transition(case: Case) -> None:
    e = Events()
    given = case.given(e)
    _GIVEN[id(e)] = given
    ledger, verdicts = fold(given)
    assert all(v.outcome != "rejected" for v in verdicts), f"setup rejected: {verdicts}"
    state, verdict = evolve(ledger.state("q"), case.when(e))
    assert verdict.outcome == case.verdict, verdict
    assert case.reason in (verdict.reason or ""), verdict
    task = state.task(case.task)
    assert (task.state if task else None) == case.state


def test_every_state_is_reached_by_some_case() -> None:
    reached = {case.state for case in CASES}
    assert set(TaskState) <= reached
