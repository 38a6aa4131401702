"""The `started-early` audit rule: no task starts before its dependencies ended, judged in log
time at the end of the log, whatever order the partitions were read in."""

from __future__ import annotations

from taskfold.audit.invariants import audit, audit_events
from taskfold.core.state import ACCEPTED
from taskfold.core.testing import Events


def honest(a: Events, b: Events) -> tuple[list, list]:
    """x in queue b completes at 10; d in queue a waits on it, is released at 15 and starts at 20."""
    first_b = [b.join("bx", at=1), b.submit("x", at=2), b.assign("x", "bx", at=3), b.start("x", "bx", at=4),
               b.complete("x", "bx", at=10)]
    first_a = [a.join("ad", at=1), a.submit("d", depends_on=["x"], at=5), a.resolved("d", "x", at=15),
               a.assign("d", "ad", at=16), a.start("d", "ad", at=20), a.complete("d", "ad", at=25)]
    return first_b, first_a


def test_a_start_after_its_dependency_completed_is_fine_in_any_partition_order() -> None:
    b_events, a_events = honest(Events(queue="a", seed="a"), Events(queue="b", seed="b"))
    for order in (b_events + a_events, a_events + b_events):
        report = audit_events(order, require_terminal=True)
        assert report.ok, report.violations


def test_a_start_accepted_before_the_dependency_completed_is_started_early() -> None:
    a, b = Events(queue="a", seed="a"), Events(queue="b", seed="b")
    events = [b.join("bx", at=1), b.submit("x", at=2), a.join("ad", at=1), a.submit("d", depends_on=["x"], at=5),
              a.assign("d", "ad", at=6), a.start("d", "ad", at=7), b.assign("x", "bx", at=8),
              b.start("x", "bx", at=9), b.complete("x", "bx", at=30)]
    report = audit([(event, ACCEPTED) for event in events])  # as a faulty projection recorded them
    early = [v for v in report.violations if v.rule == "started-early"]
    assert [(v.task_id, v.agent_id) for v in early] == [("d", "ad")]
    assert "its dependency x (queue b) ended completed only at" in early[0].detail


def test_a_start_whose_dependency_never_ended_or_failed_is_started_early() -> None:
    a = Events(queue="a", seed="a")
    events = [a.join("ad", at=1), a.submit("x", at=2), a.submit("y", at=2), a.cancel("y", at=3),
              a.submit("d", depends_on=["x"], at=5), a.submit("e", depends_on=["y"], at=5),
              a.assign("d", "ad", at=6), a.start("d", "ad", at=7), a.assign("e", "ad", at=8), a.start("e", "ad", at=9)]
    report = audit([(event, ACCEPTED) for event in events])
    early = {v.task_id: v.detail for v in report.violations if v.rule == "started-early"}
    assert "its dependency x is queued" in early["d"]
    assert "its dependency y ended cancelled, not completed" in early["e"]
