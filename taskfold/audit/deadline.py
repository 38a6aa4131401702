"""End-of-log rules: is every task terminal or explained, and do the books agree with the fold.

The log is the clock: "now" is the newest `occurred_at` the audit read, never the wall
clock, so an audit of the same log gives the same answer anywhere.

A task that is not terminal is explained while
* blocked on a dependency that has not ended (or is not known anywhere in the log yet, when
  the task declared `dependencies_may_follow`; without it, a dependency no queue knows is
  reported at once as `unknown-dependency`, whatever the deadline),
* scheduled with `not_before` still ahead,
* waiting out a retry backoff (until the longest delay its policy allows),
* assigned within its lease, or running within its timeout.
Otherwise it is unexplained from the moment the explanation ran out (or it became queued),
and overdue once that is longer ago than the deadline. Dead-lettered counts as terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskfold.audit.shadow import Books, TaskBook
from taskfold.audit.report import AuditReport, Violation, span, when
from taskfold.core.fold import Ledger
from taskfold.core.state import TERMINAL, TaskState

DEFAULT_DEADLINE_MS = 300_000  # 5 min of log time: the default task timeout, 5x the agent-lost silence


@dataclass(frozen=True)
class Standing:
    """Why a non-terminal task is not terminal (`reason`, and `until` when that runs out), or
    since when nothing explains it (`reason` None, `since`, and what it is stuck in: `detail`)."""

    reason: str | None
    since: int = 0
    detail: str = ""
    until: int | None = None


def standing(books: Books, book: TaskBook, end: int) -> Standing:
    """The explanation of a non-terminal task at log time `end`."""
    match book.state:
        case TaskState.blocked:
            return _blocked(books, book)
        case TaskState.scheduled | TaskState.retry_wait:
            until = book.due_by if book.due_by is not None else book.changed_at
            kind = "not_before" if book.state is TaskState.scheduled else "retry backoff"
            if until > end:
                return Standing(kind, until=until)
            return Standing(None, until, f"{book.state.value}, due by {when(until)}, {_not_assigned(book)}")
        case TaskState.assigned | TaskState.running:
            return _held(book, end)
    return Standing(None, book.changed_at, f"queued since {when(book.changed_at)}, {_not_assigned(book)}")


def _not_assigned(book: TaskBook) -> str:
    # A task back in line after a lost holder or a retry has been assigned, just not since.
    return f"not assigned again after attempt {book.attempt}" if book.attempt else "never assigned"


def _blocked(books: Books, book: TaskBook) -> Standing:
    ended = {}
    for dependency in sorted(book.waiting_on):
        known = books.find(dependency, book.queue)
        if known is None or known.state not in TERMINAL:
            return Standing("waiting on a dependency")
        ended[dependency] = known
    since = max([book.changed_at] + [d.finished_at or 0 for d in ended.values()])
    done = ", ".join(f"{d} {k.state.value} in queue {k.queue}" for d, k in ended.items())
    return Standing(None, since, f"blocked, but every dependency it waits on has ended ({done or 'none left'})")


def unknown_dependencies(books: Books, book: TaskBook) -> list[str]:
    """The dependencies a blocked task waits on that no queue has, unless it said they may follow."""
    if book.state is not TaskState.blocked or book.may_follow:
        return []
    return [d for d in sorted(book.waiting_on) if books.find(d, book.queue) is None]


def _held(book: TaskBook, end: int) -> Standing:
    if book.state is TaskState.running:
        until, what = (book.started_at or book.changed_at) + book.timeout_ms, "its timeout"
    else:
        until, what = (book.assigned_at or book.changed_at) + book.lease_ms, "its lease"
    if until > end:
        return Standing(f"{book.state.value} within {what}", until=until)
    return Standing(None, until, f"{book.state.value} by {book.holder} (attempt {book.attempt}) past {what} "
                    f"({when(until)}) with no report")


def end_of_log(books: Books, report: AuditReport, *, deadline_ms: int | None, require_terminal: bool) -> None:
    """Count the tasks and report the ones that did not end and should have."""
    end = report.end_ms or 0
    for queue, q in sorted(books.queues.items()):
        for book in sorted(q.tasks.values(), key=lambda b: b.task_id):
            report.tasks += 1
            report.states[book.state.value] += 1
            if book.state in TERMINAL:
                continue
            unknown = unknown_dependencies(books, book)
            if unknown:
                report.violations.append(Violation(
                    "unknown-dependency", queue, f"task {book.task_id} waits on {', '.join(unknown)}, which no queue "
                    "knows, and it did not declare dependencies_may_follow", book.task_id))
                continue
            if require_terminal:
                report.violations.append(Violation("not-terminal", queue, f"task {book.task_id} ended the log "
                                                   f"{book.state.value}", book.task_id, book.holder))
                continue
            if deadline_ms is None:
                continue
            found = standing(books, book, end)
            if found.reason is not None:
                report.explained[found.reason] += 1
            elif end - found.since > deadline_ms:
                report.violations.append(Violation(
                    "overdue", queue, f"task {book.task_id}: {found.detail}; unexplained for {span(end - found.since)} "
                    f"of log time (deadline {span(deadline_ms)})", book.task_id, book.holder))
            else:
                report.explained["within the deadline"] += 1


def compare_states(books: Books, ledger: Ledger, report: AuditReport) -> None:
    """Report every task whose final state in the books differs from the fold's."""
    seen = set()
    for queue, state in sorted(ledger.queues.items()):
        for task in state.tasks.values():
            seen.add((queue, task.task_id))
            book = books.task(queue, task.task_id)
            mine = book.state.value if book is not None else "absent"
            if mine != task.state.value:
                report.violations.append(Violation("state-mismatch", queue, f"task {task.task_id}: the fold says "
                                                   f"{task.state.value}, the audit's books say {mine}", task.task_id))
    for queue, q in sorted(books.queues.items()):
        for task_id in sorted(set(q.tasks) - {t for qq, t in seen if qq == queue}):
            report.violations.append(Violation("state-mismatch", queue, f"task {task_id}: the audit's books say "
                                               f"{q.tasks[task_id].state.value}, the fold has no such task", task_id))
