"""The promises taskfold makes, checked over (event, verdict) pairs in log order.

The checks keep their own books from accepted events (who holds which attempt, how many
slots each seat has, which state each task is in) instead of trusting the fold's state,
so a bug in the fold, or verdicts recorded elsewhere (a projection), show up as
violations. Rejected and duplicate events are the fold saying no; only what was
accepted can break a promise. The rules and their names are in `report.RULES`.

One accepted event is judged in three steps:
1. the specific promises it could break, against the books before it (`rules.promises`);
2. the state machine table and its guards (`rules.transition`), reported only when step
   1 found nothing, so a faulty acceptance reads as the promise it broke;
3. the books take the event, and a task it ended a second time is `terminal-twice`.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskfold.audit import rules
from taskfold.audit.shadow import Books
from taskfold.audit.deadline import compare_states, end_of_log
from taskfold.audit.order import StartOrder
from taskfold.audit.priority import PriorityStarts
from taskfold.audit.report import AuditReport, Violation
from taskfold.core.events import Event
from taskfold.core.fold import Ledger
from taskfold.core.state import Verdict


class Auditor:
    """Judges accepted events one at a time, then the end of the log."""

    def __init__(self) -> None:
        self.books = Books()
        self.report = AuditReport()
        self._accepted_ids: set[tuple[str, str]] = set()  # (queue, event id): the fold dedups per queue
        self.order = StartOrder()  # started-early is judged at the end: dependencies may be in other partitions
        self.priority = PriorityStarts()  # priority-start needs positions: judged only when they are given

    def observe(self, event: Event, verdict: Verdict, position: str | None = None) -> list[Violation]:
        """Judge one event with the verdict it was given; the violations it caused."""
        report = self.report
        report.events += 1
        stray = rules.misplaced(event, verdict)
        if stray:
            # A stamp the fold rejected must not become the log's "now" either.
            report.violations.extend(_at(stray, position))
            return stray
        report.end_ms = max(report.end_ms or 0, event.occurred_at)
        if not verdict.accepted:
            return []
        report.accepted += 1
        self.order.observe(event, position)
        found = _at(self._judge(event, position), position)
        report.violations.extend(found)
        return found

    def _judge(self, event: Event, position: str | None = None) -> list[Violation]:
        if (event.queue, event.event_id) in self._accepted_ids:
            # The redelivery is the fault; what it then did to the books would only repeat it.
            self.books.apply(event)
            return [Violation("accepted-twice", event.queue, f"{event.event_type} {event.event_id} was accepted "
                              "again", event.task, event.agent)]
        self._accepted_ids.add((event.queue, event.event_id))
        specific = rules.promises(self.books, event)
        inversion = self.priority.judge(self.books, event, position)
        specific += [inversion] if inversion is not None else []
        illegal = rules.transition(self.books, event)
        specific += rules.terminal_twice(self.books.apply(event), event)
        return specific or ([illegal] if illegal else [])

    def finish(self, ledger: Ledger | None = None, *, require_terminal: bool = False,
               deadline_ms: int | None = None) -> AuditReport:
        """Judge the end of the log: tasks that did not end, and (given the fold's ledger) final states."""
        end_of_log(self.books, self.report, deadline_ms=deadline_ms, require_terminal=require_terminal)
        self.report.violations += self.order.violations(self.books)
        if ledger is not None:
            compare_states(self.books, ledger, self.report)
        return self.report


def _at(found: list[Violation], position: str | None) -> list[Violation]:
    if position is None:
        return found
    return [Violation(v.rule, v.queue, v.detail, v.task_id, v.agent_id, position) for v in found]


def audit(entries: Iterable[tuple[Event, Verdict]], ledger: Ledger | None = None,
          require_terminal: bool = True, *, deadline_ms: int | None = None) -> AuditReport:
    """Check every rule over (event, verdict) pairs; given the fold's ledger and `require_terminal`, every task must have ended.

    Without a ledger the pairs may be a slice of a log, so tasks that did not end are not
    reported (as before the audit kept its own books); `deadline_ms` reports overdue ones.
    """
    auditor = Auditor()
    for event, verdict in entries:
        auditor.observe(event, verdict)
    return auditor.finish(ledger, require_terminal=require_terminal and ledger is not None, deadline_ms=deadline_ms)


def audit_events(events: Iterable[Event], require_terminal: bool = True, *,
                 deadline_ms: int | None = None) -> AuditReport:
    """Fold the events afresh and audit the result."""
    ledger = Ledger()
    pairs = [(event, ledger.apply(event)) for event in events]
    return audit(pairs, ledger, require_terminal, deadline_ms=deadline_ms)


__all__ = ["AuditReport", "Auditor", "Violation", "audit", "audit_events"]
