"""The invariant checks pass clean logs and catch each kind of broken promise."""

from __future__ import annotations

from taskfold.audit import audit, audit_events
from taskfold.core.state import ACCEPTED
from taskfold.core.testing import Events


def clean_log(e: Events) -> list:
    return [e.join("a1", slots=2), e.submit("t1"), e.submit("t2"), e.assign("t1", "a1"), e.assign("t2", "a1"),
            e.start("t1", "a1"), e.complete("t1", "a1"), e.fail("t2", "a1"), e.assign("t2", "a1", attempt=2, at=10**9),
            e.complete("t2", "a1", attempt=2, at=10**9 + 1), e.complete("t1", "a1")]


def test_a_clean_log_passes_even_with_rejected_noise() -> None:
    report = audit_events(clean_log(Events()))
    assert report.ok, report.violations
    assert report.states == {"completed": 2} and report.events == 11


def test_a_task_that_never_ends_is_reported() -> None:
    e = Events()
    report = audit_events([e.join("a1"), e.submit("t1"), e.submit("t2"), e.assign("t1", "a1")])
    assert {(v.rule, v.task_id) for v in report.violations} == {("not-terminal", "t1"), ("not-terminal", "t2")}
    assert audit_events([e.submit("t3")], require_terminal=False).ok


def test_verdicts_that_overbook_a_seat_are_caught() -> None:
    # As if a broken fold (or a projection's recorded verdicts) had accepted everything.
    e = Events()
    events = [e.join("a1", slots=1), e.submit("t1"), e.submit("t2"), e.assign("t1", "a1"), e.assign("t2", "a1")]
    rules = [v.rule for v in audit((ev, ACCEPTED) for ev in events).violations]
    assert rules == ["over-slots"]


def test_two_holders_a_second_completion_and_an_unfenced_report_are_caught() -> None:
    e = Events()
    events = [e.join("a1", slots=2), e.join("a2", slots=2), e.submit("t1"), e.assign("t1", "a1"),
              e.assign("t1", "a2", attempt=2), e.complete("t1", "a1"), e.complete("t1", "a2", attempt=2)]
    rules = [v.rule for v in audit((ev, ACCEPTED) for ev in events).violations]
    # a1's report is stale (a2 holds attempt 2) yet ends the task; a2's completion then ends it again.
    assert rules == ["two-holders", "unfenced-report", "unfenced-report", "terminal-twice"]
