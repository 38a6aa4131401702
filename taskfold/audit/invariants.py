"""The promises taskfold makes, checked over (event, verdict) pairs in log order.

The checks keep their own books from accepted events (who holds which attempt, how many
slots each seat has) instead of trusting the fold's state, so a bug in the fold, or
verdicts recorded elsewhere (a projection), show up as violations.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from taskfold.events import (
    AgentJoined,
    AgentLeft,
    Event,
    TaskAssigned,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskSubmitted,
    TaskTimedOut,
)
from taskfold.fold import Ledger
from taskfold.state import TERMINAL, Verdict

ENDS_ATTEMPT = (TaskCompleted, TaskFailed, TaskLeaseExpired, TaskTimedOut, TaskCancelled)


@dataclass(frozen=True)
class Violation:
    """One broken promise, with where and why."""

    rule: str
    queue: str
    detail: str
    task_id: str | None = None
    agent_id: str | None = None

    def __str__(self) -> str:
        return f"[{self.rule}] queue {self.queue}: {self.detail}"


@dataclass
class AuditReport:
    """Everything an audit found."""

    violations: list[Violation] = field(default_factory=list)
    events: int = 0
    tasks: int = 0
    states: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class _Books:
    slots: dict[tuple[str, str], int] = field(default_factory=dict)
    holding: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    holder: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)  # (queue, task) -> (agent, attempt)
    completions: Counter = field(default_factory=Counter)


def audit(entries: Iterable[tuple[Event, Verdict]], ledger: Ledger | None = None,
          require_terminal: bool = True) -> AuditReport:
    """Check slots, single holders, single completion, fenced reports and (optionally) that every task ended."""
    report, books = AuditReport(), _Books()
    for event, verdict in entries:
        report.events += 1
        if verdict.accepted:
            report.violations.extend(_check(books, event))
    if ledger is not None:
        for queue, state in sorted(ledger.queues.items()):
            for task in state.tasks.values():
                report.tasks += 1
                report.states[task.state.value] += 1
                if require_terminal and task.state not in TERMINAL:
                    report.violations.append(Violation(
                        "not-terminal", queue, f"task {task.task_id} ended the log {task.state.value}", task.task_id))
    return report


def audit_events(events: Iterable[Event], require_terminal: bool = True) -> AuditReport:
    """Fold the events afresh and audit the result."""
    ledger = Ledger()
    pairs = [(event, ledger.apply(event)) for event in events]
    return audit(pairs, ledger, require_terminal)


def _check(books: _Books, event: Event) -> list[Violation]:
    q = event.queue
    match event:
        case AgentJoined():
            books.slots[(q, event.agent_id)] = event.slots
        case AgentLeft():
            for task_id in books.holding.pop((q, event.agent_id), set()):
                books.holder.pop((q, task_id), None)
        case TaskAssigned():
            return _assigned(books, event)
        case TaskCompleted() | TaskFailed() | TaskLeaseExpired() | TaskTimedOut() | TaskCancelled():
            return _ended(books, event)
        case TaskSubmitted():
            pass
    return []


def _assigned(books: _Books, event: TaskAssigned) -> list[Violation]:
    q, seat = event.queue, (event.queue, event.agent_id)
    out = []
    current = books.holder.get((q, event.task_id))
    if current is not None:
        out.append(Violation("two-holders", q, f"task {event.task_id} attempt {event.attempt} assigned to "
                             f"{event.agent_id} while {current[0]} held attempt {current[1]}", event.task_id, event.agent_id))
    books.holder[(q, event.task_id)] = (event.agent_id, event.attempt)
    books.holding[seat].add(event.task_id)
    slots = books.slots.get(seat, 0)
    if len(books.holding[seat]) > slots:
        out.append(Violation("over-slots", q, f"agent {event.agent_id} holds {len(books.holding[seat])} tasks "
                             f"with {slots} slots", event.task_id, event.agent_id))
    return out


def _ended(books: _Books, event: Event) -> list[Violation]:
    q, task_id, agent, attempt = event.queue, event.task_id, event.agent_id, event.attempt  # type: ignore[attr-defined]
    out = []
    if isinstance(event, TaskCompleted):
        books.completions[(q, task_id)] += 1
        if books.completions[(q, task_id)] > 1:
            out.append(Violation("completed-twice", q, f"task {task_id} completed more than once", task_id, agent))
    if books.holder.get((q, task_id)) != (agent, attempt):
        # An unfenced report must not release the attempt its real holder still has.
        out.insert(0, Violation("unfenced-report", q, f"{event.event_type} from {agent} for attempt {attempt} of "
                                f"task {task_id}, which it does not hold ({books.holder.get((q, task_id))})",
                                task_id, agent))
        return out
    books.holder.pop((q, task_id), None)
    books.holding[(q, agent)].discard(task_id)
    return out
