"""Frozen state of one queue as the fold sees it, and the verdicts it gives.

The state holds a whole queue (tasks, the agents serving it, concurrency keys) because
the fold decides capacity and concurrency rules itself (ARCHITECTURE §1). Maps are
persistent (`immutables.Map`), so an evolve step copies only what it changes.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from enum import Enum
from functools import cache
from operator import attrgetter
from typing import Any, Literal, TypeVar

from immutables import Map

from taskfold.core.events import Backoff, DependencyFailurePolicy, Priority


class TaskState(str, Enum):
    blocked = "blocked"
    scheduled = "scheduled"
    queued = "queued"
    assigned = "assigned"
    running = "running"
    retry_wait = "retry_wait"
    completed = "completed"
    dead_lettered = "dead_lettered"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for completed, dead_lettered and cancelled."""
        return self in TERMINAL

    @property
    def in_flight(self) -> bool:
        """True while an agent holds an attempt (assigned or running)."""
        return self in (TaskState.assigned, TaskState.running)


TERMINAL = frozenset({TaskState.completed, TaskState.dead_lettered, TaskState.cancelled})
WAITING = frozenset({TaskState.blocked, TaskState.scheduled, TaskState.queued, TaskState.retry_wait})
SCHEDULABLE = frozenset({TaskState.scheduled, TaskState.queued, TaskState.retry_wait})  # QueueState.waiting

Outcome = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the fold concluded about one event; `ref` names the original task of a duplicate."""

    outcome: Outcome
    reason: str | None = None
    ref: str | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    def __str__(self) -> str:
        return self.outcome if self.reason is None else f"{self.outcome}: {self.reason}"


ACCEPTED = Verdict("accepted")


def rejected(reason: str) -> Verdict:
    """A rejection with a reason a person can read."""
    return Verdict("rejected", reason)


def duplicate(reason: str, ref: str | None = None) -> Verdict:
    """A duplicate of an event (or submit) already accepted."""
    return Verdict("duplicate", reason, ref)


Frozen = TypeVar("Frozen")


@dataclass(frozen=True, slots=True)
class _Layout:
    """How `replaced` copies one dataclass: its field values at once, their positions, a draft class."""

    values: Any  # row -> tuple of every field's value, in field order
    index: dict[str, int]
    draft: type | None  # a plain slotted twin of the class, or None to call the class itself
    defaults: tuple[Any, ...]  # each field's default, _UNSET for a required or factory field
    factories: tuple[tuple[int, Any], ...]  # (position, default_factory)
    required: tuple[int, ...]  # positions of the fields without a default


_UNSET = object()


@cache
def _layout(cls: type) -> _Layout:
    found = fields(cls)
    if not all(f.init for f in found):
        raise TypeError(f"replaced() needs every field of {cls.__name__} to be an init field")
    names = tuple(f.name for f in found)
    draft = None
    if "__slots__" in cls.__dict__ and not hasattr(cls, "__post_init__"):
        # Not frozen, same slots in the same order: its __init__ stores each field with
        # one bytecode instead of a call to object.__setattr__, and CPython lets an
        # instance of it become a `cls` (compatible layouts), frozen from then on.
        draft = make_dataclass(f"_{cls.__name__}Draft", names, slots=True, eq=False, repr=False, match_args=False)
    defaults = tuple(_UNSET if f.default is MISSING else f.default for f in found)
    factories = tuple((n, f.default_factory) for n, f in enumerate(found) if f.default_factory is not MISSING)
    required = tuple(n for n, f in enumerate(found) if f.default is MISSING and f.default_factory is MISSING)
    return _Layout(attrgetter(*names), {name: n for n, name in enumerate(names)}, draft, defaults, factories,
                   required)


def created(cls: type[Frozen], values: dict[str, Any]) -> Frozen:
    """`cls(**values)`, built the way `replaced` builds a copy (the fold makes a Task per submit)."""
    layout = _layout(cls)
    if layout.draft is None:
        return cls(**values)
    carried = list(layout.defaults)
    _fill(cls, layout, carried, values)
    for position, factory in layout.factories:
        if carried[position] is _UNSET:
            carried[position] = factory()
    for position in layout.required:
        if carried[position] is _UNSET:
            missing = [f.name for f in fields(cls)][position]
            raise TypeError(f"{cls.__name__} needs the field {missing!r}")
    copy = layout.draft(*carried)
    copy.__class__ = cls
    return copy


def _fill(cls: type, layout: _Layout, carried: list[Any], changes: dict[str, Any]) -> None:
    index = layout.index
    for name, value in changes.items():
        position = index.get(name)
        if position is None:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
        carried[position] = value


def replaced(row: Frozen, changes: dict[str, Any]) -> Frozen:
    """`dataclasses.replace(row, **changes)`, about five times cheaper, for dataclasses without
    init=False fields (and, for slotted ones, without __post_init__, which it does not run).

    The fold copies a 38-field Task on nearly every event; `replace` looks every field up by
    name and the frozen __init__ sets each through object.__setattr__ (about 8.5 µs a Task).
    This reads all the values at once and builds the copy through a non-frozen twin of the
    class (about 1.6 µs). Every field is carried, so a field added later is too.
    """
    cls = type(row)
    layout = _layout(cls)
    row_values = layout.values(row)
    carried = list(row_values) if type(row_values) is tuple else [row_values]
    index = layout.index
    for name, value in changes.items():  # _fill, inlined: this runs a few times per event
        position = index.get(name)
        if position is None:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
        carried[position] = value
    if layout.draft is None:
        return cls(*carried)
    copy = layout.draft(*carried)
    copy.__class__ = cls
    return copy


# Holders lost in a row after which a task is dead-lettered: a task that kills every agent it
# touches must stop, while one crashed agent (even with max_attempts=1) must not kill a task.
# A constant of the fold, not a setting: every reader must reach the same verdict.
LOST_HOLDERS_LIMIT = 3


@dataclass(frozen=True, slots=True)
class Task:
    """One task's folded state."""

    task_id: str
    queue: str
    task_type: str
    priority: Priority
    payload: str
    state: TaskState
    arrival: int
    submitted_at: int
    timeout_ms: int
    max_attempts: int
    backoff: Backoff
    not_before: int | None = None
    due_at: int | None = None
    waiting_on: frozenset[str] = frozenset()
    depends_on: tuple[str, ...] = ()
    on_dependency_failure: DependencyFailurePolicy = DependencyFailurePolicy.cancel
    dependencies_may_follow: bool = False
    session_id: str | None = None
    correlation_id: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int = 1
    labels: tuple[tuple[str, str], ...] = ()
    required_capabilities: frozenset[str] = frozenset()
    idempotency_key: str | None = None
    attempt: int = 0
    free_attempts: int = 0  # attempts handed back by a draining agent: not charged to max_attempts
    agent_id: str | None = None
    lease_ms: int | None = None
    assigned_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    cancel_requested: bool = False
    result: str | None = None
    error: str | None = None
    reason: str | None = None
    event_ids: frozenset[str] = frozenset()
    # Attempts whose holder was lost (lease expired, agent lost, never started): the agent's
    # failure, not the task's, so not charged to max_attempts (the fleet charges the agent).
    lost_attempts: int = 0
    # The agents lost holding it, in a row since an attempt last ended another way (or a
    # redrive); LOST_HOLDERS_LIMIT of them dead-letter the task.
    lost_holders: tuple[str, ...] = ()

    def seen(self, event_id: str) -> bool:
        """True when this task already accepted the event with that id."""
        return event_id in self.event_ids

    @property
    def charged_attempts(self) -> int:
        """Attempts that count against max_attempts: neither handed back nor lost with their holder."""
        return self.attempt - self.free_attempts - self.lost_attempts

    @property
    def runs_anyway(self) -> bool:
        """True when a dead-lettered or cancelled dependency counts as satisfied for this task."""
        return self.on_dependency_failure == DependencyFailurePolicy.run

    def noting(self, event_id: str, **changes: object) -> Task:
        """A copy with the changes applied and the event id recorded."""
        changes["event_ids"] = self.event_ids | {event_id}
        return replaced(self, changes)


@dataclass(frozen=True, slots=True)
class Member:
    """An agent's seat in one queue: its slots, abilities and the attempts it holds."""

    agent_id: str
    slots: int
    capabilities: frozenset[str] = frozenset()
    prefetch: int = 0  # attempts it may hold beyond its slots, assigned ahead (AgentJoined v2)
    labels: tuple[tuple[str, str], ...] = ()
    active: bool = True
    holding: frozenset[str] = frozenset()
    joined_at: int = 0
    left_at: int | None = None
    event_ids: frozenset[str] = frozenset()

    def seen(self, event_id: str) -> bool:
        """True when this seat already accepted the event with that id."""
        return event_id in self.event_ids


@dataclass(frozen=True, slots=True)
class QueueState:
    """The fold of one queue's events."""

    tasks: Map = field(default_factory=Map)  # task_id -> Task
    members: Map = field(default_factory=Map)  # agent_id -> Member
    idempotency: Map = field(default_factory=Map)  # idempotency key -> task_id
    holders: Map = field(default_factory=Map)  # concurrency key -> frozenset of task ids
    dependents: Map = field(default_factory=Map)  # dependency task id -> frozenset of task ids
    arrivals: int = 0
    # task_id -> `order_of(task)`, for queued, scheduled and retry_wait tasks: the values
    # compare in scheduling order, so decide finds the next tasks with C-level comparisons.
    waiting: Map = field(default_factory=Map)

    def task(self, task_id: str) -> Task | None:
        """The task with that id, if this queue knows it."""
        return self.tasks.get(task_id)

    def member(self, agent_id: str) -> Member | None:
        """The agent's seat in this queue, if it ever joined."""
        return self.members.get(agent_id)


EMPTY = QueueState()

Order = tuple[int, int, str, int]


def order_of(task: Task) -> Order:
    """(priority rank, arrival, task id, due at): a schedulable task's place in line, and
    when it is due (0 for a queued task, which is due at once). Unique per task, so two
    entries never tie before the due time."""
    due = 0 if task.state == TaskState.queued else (task.due_at or 0)
    return (task.priority.rank, task.arrival, task.task_id, due)
