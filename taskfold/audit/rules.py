"""The rules judged at each accepted event, against the books as they were before it.

`promises` names the specific broken promise (two holders, an unfenced report, a seat or
a concurrency key over its limit). `transition` checks the event against the state
machine table and its guards. `terminal_twice` looks at what the event did. The auditor
reports an illegal transition only when no specific promise already names the event,
so one faulty acceptance reads as one violation where it can.
"""

from __future__ import annotations

from taskfold.audit.shadow import Books, Moved, TaskBook
from taskfold.audit.report import Violation, when
from taskfold.audit.transitions import allowed, seat_allowed
from taskfold.core.events import (
    AgentJoined,
    AgentLeft,
    DependencyResolved,
    Event,
    ScheduleEvent,
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskStarted,
    TaskSubmitted,
    TaskTimedOut,
    WorkflowSubmitted,
)
from taskfold.core.fold.placement import MISROUTED, SKEWED
from taskfold.core.policies import workflow_task_id
from taskfold.core.state import TERMINAL, TaskState, Verdict

REPORTS = (TaskStarted, TaskCompleted, TaskFailed, TaskLeaseExpired, TaskTimedOut, TaskCancelled)


def _violation(rule: str, event: Event, detail: str) -> Violation:
    return Violation(rule, event.queue, detail, event.task, event.agent)


def misplaced(event: Event, verdict: Verdict) -> list[Violation]:
    """A rejection for where the event sits (misrouted, stamped ahead): a writer's fault the fold caught."""
    reason = verdict.reason or ""
    if verdict.outcome != "rejected" or not reason.startswith((MISROUTED, SKEWED)):
        return []
    return [_violation("misrouted" if reason.startswith(MISROUTED) else "stamped-ahead", event, reason)]


def promises(books: Books, event: Event) -> list[Violation]:
    """Specific promises an accepted event breaks: holders, fencing, slots, concurrency keys."""
    book = books.task(event.queue, event.task) if event.task else None
    if book is None:
        return []
    if isinstance(event, TaskAssigned):
        return [v for v in (_two_holders(book, event), _over_slots(books, event), _over_key(books, book, event)) if v]
    if isinstance(event, TaskStarted):
        return [v for v in (_unfenced(book, event), _over_running(books, event)) if v]
    if isinstance(event, REPORTS):
        return [v for v in (_unfenced(book, event),) if v]
    return []


def _two_holders(book: TaskBook, event: TaskAssigned) -> Violation | None:
    if book.in_flight:
        return _violation("two-holders", event, f"task {book.task_id} attempt {event.attempt} assigned to "
                          f"{event.agent_id} while {book.holder} held attempt {book.attempt}")
    earlier = book.assignees.get(event.attempt)
    if earlier is not None:
        return _violation("two-holders", event, f"attempt {event.attempt} of task {book.task_id} assigned to "
                          f"{event.agent_id}, but it was already given to {earlier}")
    return None


def _over_slots(books: Books, event: TaskAssigned) -> Violation | None:
    seat = books.seat(event.queue, event.agent_id)
    if seat is None or not seat.active:
        why = "never joined" if seat is None else "has left"
        return _violation("over-slots", event, f"task {event.task_id} assigned to agent {event.agent_id}, which "
                          f"{why} queue {event.queue} (no slots)")
    others = seat.holding - {event.task_id}
    holding, bound = len(others) + 1, seat.slots + seat.prefetch
    if holding <= bound:
        return None
    q, book = books.queue(event.queue), books.task(event.queue, event.task_id)
    unstarted = [q.tasks[t].rank for t in others if t in q.tasks and q.tasks[t].state is TaskState.assigned]
    # One over the bound is the promise for a task that outranks every unstarted one held.
    if seat.prefetch and holding == bound + 1 and book is not None and all(book.rank < r for r in unstarted):
        return None
    ahead = f" and prefetch {seat.prefetch}" if seat.prefetch else ""
    return _violation("over-slots", event, f"agent {event.agent_id} holds {holding} tasks of queue "
                      f"{event.queue} with {seat.slots} slots{ahead} (assigned {event.task_id})")


def _over_running(books: Books, event: TaskStarted) -> Violation | None:
    seat = books.seat(event.queue, event.agent_id)
    if seat is None:
        return None
    q = books.queue(event.queue)
    running = sum(1 for t in seat.holding - {event.task_id} if t in q.tasks and q.tasks[t].state is TaskState.running)
    if running + 1 > seat.slots:
        return _violation("over-running", event, f"agent {event.agent_id} started {event.task_id} while running "
                          f"{running} tasks of queue {event.queue} with {seat.slots} slots")
    return None


def _over_key(books: Books, book: TaskBook, event: TaskAssigned) -> Violation | None:
    key = book.concurrency_key
    if key is None:
        return None
    held = books.queue(event.queue).keys.get(key, set()) - {book.task_id}
    if len(held) + 1 > book.concurrency_limit:
        return _violation("over-concurrency", event, f"concurrency key {key!r} has {len(held) + 1} tasks in flight "
                          f"with limit {book.concurrency_limit} (assigned {book.task_id}; held: {sorted(held)})")
    return None


def _unfenced(book: TaskBook, event: Event) -> Violation | None:
    agent, attempt = event.agent_id, event.attempt  # type: ignore[attr-defined]
    if book.in_flight and (book.holder, book.attempt) == (agent, attempt):
        return None
    held = f"attempt {book.attempt} is held by {book.holder}" if book.in_flight else f"task is {book.state.value}"
    return _violation("unfenced-report", event, f"{event.event_type} from {agent} for attempt {attempt} of task "
                      f"{book.task_id}, which it does not hold ({held})")


def transition(books: Books, event: Event) -> Violation | None:
    """The event against the state machine table and its guards; None when legal."""
    if isinstance(event, (AgentJoined, AgentLeft)):
        seat = books.seat(event.queue, event.agent_id)
        before = None if seat is None else seat.active
        if seat_allowed(before, event.event_type):
            return None
        where = "never joined" if seat is None else "already left"
        return _violation("illegal-transition", event, f"{event.event_type} for agent {event.agent_id}, which "
                          f"{where} queue {event.queue}")
    if isinstance(event, WorkflowSubmitted):
        return _workflow(books, event)
    if isinstance(event, ScheduleEvent):
        return None  # a schedule moves no task: its own fold judges it (scheduling/recurring.py)
    book = books.task(event.queue, event.task) if event.task else None
    before = book.state if book is not None else None
    if allowed(before, event.event_type) is None:
        now = f"is {before.value}" if before is not None else "was never submitted"
        return _violation("illegal-transition", event, f"{event.event_type} accepted for task {event.task}, which "
                          f"{now}")
    problem = _guard(book, event)
    return _violation("illegal-transition", event, problem) if problem else None


def _workflow(books: Books, event: WorkflowSubmitted) -> Violation | None:
    for node in event.nodes:
        task_id = workflow_task_id(event.workflow_id, node.node)
        if books.task(event.queue, task_id) is not None:
            return _violation("illegal-transition", event, f"workflow {event.workflow_id} accepted, but its task "
                              f"{task_id} (node {node.node}) already exists")
    return None


def _guard(book: TaskBook | None, event: Event) -> str | None:
    """What the table cannot say: self-dependencies, attempt order, due times, cancel requests."""
    match event:
        case TaskSubmitted() if event.task_id in event.depends_on:
            return f"task {event.task_id} was accepted depending on itself"
        case DependencyResolved() if book is not None and event.dependency_id not in book.waiting_on:
            return f"task {book.task_id} was not waiting on {event.dependency_id}"
        case TaskCancelRequested() if book is not None and book.cancel_requested:
            return f"cancel of task {book.task_id} was already requested"
        case TaskAssigned() if book is not None:
            return _assign_guard(book, event)
        case TaskCompleted() if book is not None and book.cancel_requested:
            return f"task {book.task_id} completed after a cancel was requested (it must be acknowledged)"
        case TaskCancelled() if book is not None and not book.cancel_requested:
            return f"task {book.task_id} cancelled by its agent with no cancel requested"
    return None


def _assign_guard(book: TaskBook, event: TaskAssigned) -> str | None:
    if event.attempt != book.attempt + 1:
        return f"attempt {event.attempt} of task {book.task_id} is not the next attempt ({book.attempt + 1})"
    if book.due_at is not None and event.occurred_at < book.due_at:
        why = "not before" if book.state is TaskState.scheduled else "retry backoff until at least"
        return f"task {book.task_id} assigned at {when(event.occurred_at)}, {why} {when(book.due_at)}"
    return None


def terminal_twice(moved: list[Moved], event: Event) -> list[Violation]:
    """Tasks the event ended that had already ended since their last redrive."""
    out = []
    for m in moved:
        if m.after in TERMINAL and m.task.ended > 1:
            was = m.before.value if m.before is not None else "new"
            out.append(Violation("terminal-twice", m.task.queue, f"task {m.task.task_id} ended {m.task.ended} times; "
                                 f"{event.event_type} moved it {was} -> {m.after.value}", m.task.task_id,
                                 event.agent))
    return out
