"""The audit's own books: what the accepted events say about every task and seat.

The books follow accepted events only, with rules written here from the design rather
than taken from the fold, so that a fold (or a projection's recorded verdicts) that
accepted something it should not have leaves a trace the rules can see. After such an
event the books keep following what was accepted, best effort: they describe the system
as it believed itself to be, not as it should have been.

Retry delays are checked as a window, not recomputed: the delay after attempt n lies
between base*(1-jitter) and base, where base = initial*multiplier^(n-1) capped at max.
That holds whatever the jitter function is, so the audit does not share it with the fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taskfold.core.events import (
    AgentJoined,
    AgentLeft,
    Backoff,
    DependencyFailurePolicy,
    DependencyOutcome,
    DependencyResolved,
    Event,
    LeaveReason,
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskRedriven,
    TaskStarted,
    TaskSubmitted,
    TaskTimedOut,
    WorkflowSubmitted,
)
from taskfold.core.policies import workflow_task_id
from taskfold.core.state import LOST_HOLDERS_LIMIT, TERMINAL, TaskState

Retry = Literal["backoff", "lost", "never", "free"]
IN_FLIGHT = (TaskState.assigned, TaskState.running)
_CURRENT = object()  # `before` default of a move: the state the book holds now


@dataclass
class Seat:
    """An agent's seat in one queue as the accepted events left it."""

    slots: int
    active: bool = True
    holding: set[str] = field(default_factory=set)
    prefetch: int = 0  # attempts it may hold beyond its slots, not yet started (AgentJoined v2)


@dataclass
class TaskBook:
    """One task as the accepted events left it."""

    task_id: str
    queue: str
    state: TaskState
    submitted_at: int
    changed_at: int
    timeout_ms: int
    max_attempts: int
    backoff: Backoff
    not_before: int | None = None
    concurrency_key: str | None = None
    concurrency_limit: int = 1
    rank: int = 0  # priority rank, 0 = critical
    waiting_on: set[str] = field(default_factory=set)
    runs_anyway: bool = False  # on_dependency_failure: run
    may_follow: bool = False  # dependencies_may_follow: an unknown dependency is not (yet) an error
    attempt: int = 0
    free_attempts: int = 0  # handed back by a draining agent: not charged
    lost_attempts: int = 0  # its holder was lost (lease expired, agent lost): not charged
    lost_in_a_row: int = 0  # holders lost since an attempt last ended another way, or a redrive
    holder: str | None = None
    lease_ms: int = 0
    assigned_at: int | None = None
    started_at: int | None = None
    due_at: int | None = None  # the earliest it may be assigned again (scheduled, retry_wait)
    due_by: int | None = None  # the latest its delay can last
    cancel_requested: bool = False
    assignees: dict[int, str] = field(default_factory=dict)  # attempt -> agent it was given to
    ended: int = 0  # accepted transitions to a terminal state since the last redrive
    finished_at: int | None = None

    @property
    def charged(self) -> int:
        """Attempts that count against max_attempts."""
        return self.attempt - self.free_attempts - self.lost_attempts

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT


@dataclass(frozen=True)
class Moved:
    """A task changed state because of an event (directly, or as a dependent)."""

    task: TaskBook
    before: TaskState | None
    after: TaskState


@dataclass
class QueueBooks:
    """One queue: its tasks, seats, in-flight holders per concurrency key, dependents."""

    tasks: dict[str, TaskBook] = field(default_factory=dict)
    seats: dict[str, Seat] = field(default_factory=dict)
    keys: dict[str, set[str]] = field(default_factory=dict)
    dependents: dict[str, set[str]] = field(default_factory=dict)


def backoff_window(policy: Backoff, attempt: int) -> tuple[int, int]:
    """The shortest and longest retry delay after failed `attempt` (ms), whatever the jitter."""
    base = float(policy.initial_ms)
    for _ in range(max(0, attempt - 1)):
        base = min(base * policy.multiplier, float(policy.max_ms))
    base = min(base, float(policy.max_ms))
    # A millisecond of slack on each side absorbs float rounding in the fold's own arithmetic.
    return max(0, int(base * (1.0 - policy.jitter)) - 1), int(base) + 1


class Books:
    """Every queue's books, kept from accepted events in log order."""

    def __init__(self) -> None:
        self.queues: dict[str, QueueBooks] = {}
        self._moved: list[Moved] = []

    def queue(self, name: str) -> QueueBooks:
        """The books of a queue (created empty on first use)."""
        return self.queues.setdefault(name, QueueBooks())

    def task(self, queue: str, task_id: str) -> TaskBook | None:
        """A task's book, if the queue accepted its submission."""
        books = self.queues.get(queue)
        return books.tasks.get(task_id) if books else None

    def seat(self, queue: str, agent_id: str) -> Seat | None:
        """An agent's seat in a queue, if it ever joined."""
        books = self.queues.get(queue)
        return books.seats.get(agent_id) if books else None

    def find(self, task_id: str, prefer: str) -> TaskBook | None:
        """A task by id: in queue `prefer` if there, else in any queue (cross-queue dependencies)."""
        book = self.task(prefer, task_id)
        if book is not None:
            return book
        return next((q.tasks[task_id] for q in self.queues.values() if task_id in q.tasks), None)

    def apply(self, event: Event) -> list[Moved]:
        """Book an accepted event; the state changes it caused."""
        self._moved = []
        q = self.queue(event.queue)
        match event:
            case TaskSubmitted():
                self._admit(q, event, event.task_id, list(event.depends_on))
            case WorkflowSubmitted():
                self._workflow(q, event)
            case AgentJoined():
                seat = q.seats.get(event.agent_id)
                q.seats[event.agent_id] = Seat(event.slots, True, seat.holding if seat else set(), event.prefetch)
            case AgentLeft():
                self._leave(q, event)
            case _:
                book = q.tasks.get(getattr(event, "task_id", ""))
                if book is not None:
                    self._task_event(q, book, event)
        return self._moved

    # admission

    def _admit(self, q: QueueBooks, event: Event, task_id: str, depends_on: list[str],
               spec: TaskSubmitted | None = None) -> None:
        spec = spec or event  # type: ignore[assignment]
        if task_id in q.tasks:
            return  # an accepted resubmission: the first submission stays the book
        book = TaskBook(task_id=task_id, queue=event.queue, state=TaskState.blocked, submitted_at=event.occurred_at,
                        changed_at=event.occurred_at, timeout_ms=spec.timeout_ms, max_attempts=spec.max_attempts,
                        backoff=spec.backoff, not_before=spec.not_before, concurrency_key=spec.concurrency_key,
                        concurrency_limit=spec.concurrency_limit, rank=spec.priority.rank,
                        runs_anyway=spec.on_dependency_failure == DependencyFailurePolicy.run,
                        may_follow=spec.dependencies_may_follow)
        q.tasks[task_id] = book
        failed = None
        for dependency in sorted(set(depends_on)):
            q.dependents.setdefault(dependency, set()).add(task_id)
            known = q.tasks.get(dependency)
            if known is not None and known.state is TaskState.completed:
                continue
            if known is not None and known.state in TERMINAL:
                failed = failed or (None if book.runs_anyway else dependency)
            else:
                book.waiting_on.add(dependency)
        if failed is not None:
            # Born cancelled: the tasks already waiting on this id are settled as for any other end.
            book.waiting_on.clear()
            book.ended, book.finished_at = 1, event.occurred_at
            self._move(book, TaskState.cancelled, event.occurred_at, before=None)
            self._settle(q, book, event.occurred_at)
        elif book.waiting_on:
            self._moved.append(Moved(book, None, TaskState.blocked))
        else:
            self._release(book, event.occurred_at, before=None)

    def _workflow(self, q: QueueBooks, event: WorkflowSubmitted) -> None:
        ids = {node.node: workflow_task_id(event.workflow_id, node.node) for node in event.nodes}
        for node in event.nodes:
            spec = TaskSubmitted(event_id=event.event_id, queue=event.queue, occurred_at=event.occurred_at,
                                 actor=event.actor, task_id=ids[node.node], task_type=node.task_type,
                                 timeout_ms=node.timeout_ms, max_attempts=node.max_attempts,
                                 priority=node.priority)
            self._admit(q, event, ids[node.node], [ids[d] for d in node.depends_on if d in ids], spec)

    # task events

    def _task_event(self, q: QueueBooks, book: TaskBook, event: Event) -> None:
        at = event.occurred_at
        match event:
            case TaskAssigned():
                self._assign(q, book, event)
            case TaskStarted():
                book.started_at = at
                self._move(book, TaskState.running, at)
            case TaskCompleted():
                self._finish(q, book, TaskState.completed, at)
            case TaskFailed():
                retry: Retry = "free" if event.handed_back else "backoff" if event.retryable else "never"
                self._end_attempt(q, book, at, retry)
            case TaskTimedOut():
                self._end_attempt(q, book, at, "backoff")
            case TaskLeaseExpired():
                self._end_attempt(q, book, at, "lost")
            case TaskCancelled():
                self._finish(q, book, TaskState.cancelled, at)
            case TaskCancelRequested():
                if book.in_flight:
                    book.cancel_requested = True
                else:
                    book.waiting_on.clear()
                    self._finish(q, book, TaskState.cancelled, at)
            case TaskRedriven():
                self._redrive(book, event)
            case DependencyResolved():
                self._resolved(q, book, event)

    def _assign(self, q: QueueBooks, book: TaskBook, event: TaskAssigned) -> None:
        self._free(q, book)  # an attempt still held is superseded (only a faulty fold accepts that)
        book.attempt, book.holder, book.lease_ms = event.attempt, event.agent_id, event.lease_ms
        book.assigned_at, book.started_at, book.due_at, book.due_by = event.occurred_at, None, None, None
        book.assignees.setdefault(event.attempt, event.agent_id)
        q.seats.setdefault(event.agent_id, Seat(0, False)).holding.add(book.task_id)
        if book.concurrency_key is not None:
            q.keys.setdefault(book.concurrency_key, set()).add(book.task_id)
        self._move(book, TaskState.assigned, event.occurred_at)

    def _redrive(self, book: TaskBook, event: TaskRedriven) -> None:
        book.max_attempts = book.charged + event.extra_attempts
        book.lost_in_a_row = 0
        book.holder, book.due_at, book.due_by, book.finished_at, book.ended = None, None, None, None, 0
        self._move(book, TaskState.queued, event.occurred_at)

    def _resolved(self, q: QueueBooks, book: TaskBook, event: DependencyResolved) -> None:
        if event.outcome == DependencyOutcome.satisfied or book.runs_anyway:
            self._satisfy(book, event.dependency_id, event.occurred_at)
        else:
            book.waiting_on.clear()
            self._finish(q, book, TaskState.cancelled, event.occurred_at)

    def _leave(self, q: QueueBooks, event: AgentLeft) -> None:
        seat = q.seats.get(event.agent_id)
        if seat is None:
            return
        retry: Retry = "free" if event.reason == LeaveReason.drained else "lost"
        for task_id in sorted(seat.holding):
            book = q.tasks.get(task_id)
            if book is not None and book.in_flight:
                self._end_attempt(q, book, event.occurred_at, retry)
        seat.active, seat.holding = False, set()

    # transitions shared by the events above

    def _move(self, book: TaskBook, state: TaskState, at: int, before: object = _CURRENT) -> None:
        was = book.state if before is _CURRENT else before
        book.state, book.changed_at = state, at
        self._moved.append(Moved(book, was, state))  # type: ignore[arg-type]

    def _free(self, q: QueueBooks, book: TaskBook) -> None:
        """Release the slot and concurrency key the task's attempt holds."""
        if book.holder is not None and book.holder in q.seats:
            q.seats[book.holder].holding.discard(book.task_id)
        if book.concurrency_key is not None:
            q.keys.get(book.concurrency_key, set()).discard(book.task_id)

    def _end_attempt(self, q: QueueBooks, book: TaskBook, at: int, retry: Retry) -> None:
        """End the current attempt: cancelled if asked, retried if allowed, else dead-lettered."""
        if book.cancel_requested:
            return self._finish(q, book, TaskState.cancelled, at)
        if retry == "lost":
            # The agent failed, not the task: uncharged, unless the task keeps losing its holders.
            book.lost_attempts += 1
            book.lost_in_a_row += 1
            if book.lost_in_a_row >= LOST_HOLDERS_LIMIT:
                return self._finish(q, book, TaskState.dead_lettered, at)
        else:
            book.lost_in_a_row = 0
        if retry == "free":
            book.free_attempts += 1
        elif retry == "never" or (retry == "backoff" and book.charged >= book.max_attempts):
            return self._finish(q, book, TaskState.dead_lettered, at)
        self._free(q, book)
        book.holder = None
        if retry == "backoff":
            shortest, longest = backoff_window(book.backoff, book.attempt)
            book.due_at, book.due_by = at + shortest, at + longest
            return self._move(book, TaskState.retry_wait, at)
        book.due_at = book.due_by = None
        self._move(book, TaskState.queued, at)

    def _finish(self, q: QueueBooks, book: TaskBook, state: TaskState, at: int) -> None:
        """Make the task terminal, free what it held, and settle the tasks waiting on it."""
        self._free(q, book)
        book.ended += 1
        book.finished_at, book.due_at, book.due_by = at, None, None
        self._move(book, state, at)
        self._settle(q, book, at)

    def _settle(self, q: QueueBooks, done: TaskBook, at: int) -> None:
        for task_id in sorted(q.dependents.get(done.task_id, set())):
            waiting = q.tasks.get(task_id)
            if waiting is None or waiting.state is not TaskState.blocked or done.task_id not in waiting.waiting_on:
                continue
            if done.state is TaskState.completed or waiting.runs_anyway:
                self._satisfy(waiting, done.task_id, at)
            else:
                waiting.waiting_on.clear()
                self._finish(q, waiting, TaskState.cancelled, at)

    def _satisfy(self, book: TaskBook, dependency: str, at: int) -> None:
        book.waiting_on.discard(dependency)
        if not book.waiting_on:
            self._release(book, at)

    def _release(self, book: TaskBook, at: int, before: object = _CURRENT) -> None:
        """Nothing it depends on is pending: scheduled while not_before is ahead, else queued."""
        if book.not_before is not None and book.not_before > at:
            book.due_at = book.due_by = book.not_before
            return self._move(book, TaskState.scheduled, at, before)
        self._move(book, TaskState.queued, at, before)
