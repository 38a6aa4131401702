"""The fold's rows: a queue's fold state and fleet as the rows both processors persist.

Shared by the scheduler's tables (`streams/`) and the projections' store (`projections/`).

One row per task, per seat, per agent record and per session of a queue, plus the fleet's
round-robin cursor. Every key starts with the queue name, so a queue's rows stay in the
partition of the queue's events (the changelog partition is the event's partition).
Only tasks and seats of `QueueState` are stored: its other maps (idempotency keys,
concurrency holders, dependents, the arrival counter) are derived from them by `rebuild`.

Rows are JSON, never pickle (`taskfold.core.rowjson`), so a row can be read by any version
that knows its format, and by a person with `ldb`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any

from immutables import Map

from taskfold.core import workingset
from taskfold.core.events import AgentJoined, AgentLeft, Event, WorkflowSubmitted
from taskfold.core.fold import Where, evolve
from taskfold.core.policies import workflow_task_id
from taskfold.core.scheduling.fleet import observe
from taskfold.core.scheduling.model import AgentRecord, Fleet, QueuePolicy, Session
# The rows' JSON lives in rowjson; these names stay importable from here.
from taskfold.core.rowjson import ROW_FORMAT, RowFormatError, _fields, decode, encode, plain  # noqa: F401
from taskfold.core.state import EMPTY, SCHEDULABLE, Member, QueueState, Task, TaskState, Verdict, order_of, replaced


# Keys and rows of a queue

SEP = "\x00"  # queue names cannot contain it (QueueName pattern)

# Row kinds, the one-letter second part of a key.
TASK, SEAT, AGENT, SESSION, CURSOR = "t", "m", "a", "s", "c"
# The offset row of a partition (queue part empty): the next offset its rows reflect.
OFFSET = "o"


def key(queue: str, kind: str, ident: str = "") -> bytes:
    """The table key of one row: queue, kind and id, NUL-separated."""
    return f"{queue}{SEP}{kind}{SEP}{ident}".encode()


def parse_key(raw: bytes) -> tuple[str, str, str]:
    """(queue, kind, id) of a table key."""
    queue, kind, ident = raw.decode().split(SEP, 2)
    return queue, kind, ident


@dataclass
class QueueRows:
    """The rows of one queue as read back from the table."""

    tasks: list[Task] = field(default_factory=list)
    seats: list[Member] = field(default_factory=list)
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    cursor: int = 0
    finished: dict[str, workingset.Finished] = field(default_factory=dict)  # task id -> what the indexes need

    def add(self, kind: str, ident: str, raw: bytes, keep_finished: bool = True) -> None:
        """Take in one stored row; without `keep_finished`, a finished task only feeds the indexes."""
        if kind == CURSOR:
            self.cursor = int(json.loads(raw)["cursor"])
        elif kind == TASK:
            left = None if keep_finished else workingset.finished_row(raw)
            if left is not None:
                self.finished[ident] = left
            else:
                self.tasks.append(decode(Task, raw))
        elif kind == SEAT:
            self.seats.append(decode(Member, raw))
        elif kind == AGENT:
            self.agents[ident] = decode(AgentRecord, raw)
        elif kind == SESSION:
            self.sessions[ident] = decode(Session, raw)
        else:
            raise RowFormatError(f"unknown row kind {kind!r}")

    def state(self) -> QueueState:
        """The queue's fold state; a seat holds exactly the in-flight tasks that name it."""
        held: dict[str, set[str]] = {}
        for task in self.tasks:
            if task.state.in_flight and task.agent_id is not None:
                held.setdefault(task.agent_id, set()).add(task.task_id)
        seats = [replace(m, holding=frozenset(held.get(m.agent_id, ()))) for m in self.seats]
        return rebuild(self.tasks, seats, self.finished)

    def fleet(self) -> Fleet:
        """The queue's fleet."""
        return Fleet(agents=Map(self.agents), sessions=Map(self.sessions), cursor=self.cursor)


@dataclass
class Stored:
    """Everything read back from the table: rows by queue, and the offsets they reflect."""

    queues: dict[str, QueueRows] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to apply


def read(items: Iterable[tuple[bytes, bytes]], keep_finished: bool = True) -> Stored:
    """Stored rows grouped by queue, and the offset row of each partition.

    Without `keep_finished`, finished tasks stay in the store: only what the state's
    indexes need of them is read (taskfold.core.workingset).
    """
    stored = Stored()
    for raw_key, raw in items:
        queue, kind, ident = parse_key(raw_key)
        if kind == OFFSET and not queue:
            stored.offsets[int(ident)] = int(json.loads(raw)["next"])
        else:
            stored.queues.setdefault(queue, QueueRows()).add(kind, ident, raw, keep_finished)
    return stored


def offset_write(partition: int, offset: int) -> Write:
    """The offset row of a partition once the record at `offset` is applied."""
    return key("", OFFSET, str(partition)), json.dumps({"_v": ROW_FORMAT, "next": offset + 1}).encode()


Write = tuple[bytes, bytes | None]  # None deletes the row


def event_writes(
    queue: str, tasks: list[Task], seats: list[Member], fleet: list[Write], marker: tuple[str, str] | None,
) -> list[Write]:
    """The writes of the rows one event touched, with the row that records its id last.

    Changelog writes land in order and a crash loses a suffix at most. With the marking
    row last (the event's task, or the seat for AgentJoined/AgentLeft), a partly written
    event is never taken for a duplicate: it is applied again and rewrites the same rows.
    `QueueRows.state` derives seat holdings from the task rows, so a seat row written
    ahead of its task row cannot make a slot look taken.
    """
    writes = [(key(queue, TASK, t.task_id), encode(t)) for t in tasks]
    writes += [(key(queue, SEAT, m.agent_id), encode(m)) for m in seats]
    marked = key(queue, *marker) if marker is not None else None
    rest = [w for w in writes if w[0] != marked]
    return rest + fleet + [w for w in writes if w[0] == marked]


def fleet_writes(queue: str, before: Fleet, after: Fleet) -> list[Write]:
    """The writes of the fleet rows that changed (compared by identity, so unchanged maps are free)."""
    if before is after:
        return []
    writes = [(key(queue, AGENT, a), _maybe(r)) for a, r in _changed(before.agents, after.agents)]
    writes += [(key(queue, SESSION, s), _maybe(r)) for s, r in _changed(before.sessions, after.sessions)]
    if before.cursor != after.cursor:
        writes.append((key(queue, CURSOR), json.dumps({"_v": ROW_FORMAT, "cursor": after.cursor}).encode()))
    return writes


def _changed(before: Map, after: Map) -> Iterator[tuple[str, Any]]:
    if before is after:
        return
    for ident, row in after.items():
        if before.get(ident) is not row:
            yield ident, row
    for ident in before:
        if ident not in after:
            yield ident, None


def _maybe(row: Any) -> bytes | None:
    return None if row is None else encode(row)


def all_rows(queue: str, state: QueueState, fleet: Fleet) -> list[Write]:
    """Every row of a queue (used by tests and for a full checkpoint)."""
    fleet_rows = fleet_writes(queue, Fleet(cursor=-1), fleet)
    return event_writes(queue, list(state.tasks.values()), list(state.members.values()), fleet_rows, None)


# What the scheduler keeps of a task (see `slim`): no payload, no result, short texts.
NOT_KEPT = ""  # the payload of a slim task: not JSON, so it cannot pass for a payload
TEXT_KEPT_CHARS = 1000


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= TEXT_KEPT_CHARS:
        return text
    return text[: TEXT_KEPT_CHARS - 3] + "..."


def slim(task: Task) -> Task:
    """The task as the scheduler keeps it: no payload or result, error and reason clipped.

    The scheduler decides on neither, and each task row is one changelog record, which a
    payload (JSON-escaped in the row, up to twice its size or more) could push past the
    producer's record limit. The projections keep whole tasks in their local stores.
    """
    if task.payload == NOT_KEPT and task.result is None and _clip(task.error) is task.error \
            and _clip(task.reason) is task.reason:
        return task
    kept = {"payload": NOT_KEPT, "result": None, "error": _clip(task.error), "reason": _clip(task.reason)}
    return replaced(task, kept)


def slim_state(state: QueueState) -> QueueState:
    """A queue's state with every task slim (what a scheduler rebuilt from its rows holds)."""
    return replace(state, tasks=Map({tid: slim(t) for tid, t in state.tasks.items()}))


@dataclass(frozen=True, slots=True)
class Queue:
    """One queue: the fold's state and the fleet."""

    state: QueueState = EMPTY
    fleet: Fleet = Fleet()


@dataclass(frozen=True)
class Step:
    """One event applied to a queue: the verdict, the queue after, and the rows it changed.

    `writes` is encoded on first use: the scheduler slims the tasks first (`slimmed`), so
    their whole rows, payload included, are never encoded for it.
    """

    verdict: Verdict
    before: Queue
    after: Queue
    tasks: list[Task]  # task rows the event changed, as they are after it
    seats: list[Member]  # seat rows the event changed
    fleet: list[Write]  # the fleet rows it changed
    marker: tuple[str, str] | None
    queue: str

    @functools.cached_property
    def writes(self) -> list[Write]:
        """The rows to persist, the marking row last."""
        return event_writes(self.queue, self.tasks, self.seats, self.fleet, self.marker)


# Every field of a seat but its holdings, which are derived from the task rows.
_SEAT_ROW = attrgetter(*(name for name in _fields(Member) if name != "holding"))


def _seat_changed(old: Member | None, new: Member) -> bool:
    return old is None or _SEAT_ROW(old) != _SEAT_ROW(new)


def _event_task(event: Event) -> str | None:
    # vars, not event.task: on an event without the field, pydantic's __getattr__ builds and
    # raises an AttributeError, which costs more than the rest of the lookup.
    return vars(event).get("task_id")


def marker_of(event: Event) -> tuple[str, str] | None:
    """(row kind, id) of the row whose event ids tell the fold it has applied `event`."""
    if isinstance(event, (AgentJoined, AgentLeft)):
        return SEAT, event.agent_id
    task_id = _event_task(event)
    return (TASK, task_id) if task_id is not None else None


def slimmed(done: Step) -> Step:
    """The step as the scheduler keeps it: its tasks slim in the queue after it and in the writes."""
    # Most events change a task that is slim already (assign, start...): nothing to redo.
    kept = [slim(task) for task in done.tasks]
    changed = [task for task, old in zip(kept, done.tasks) if task is not old]
    if not changed:
        return done
    tasks = done.after.state.tasks.mutate()
    for task in changed:
        tasks[task.task_id] = task
    after = Queue(replaced(done.after.state, {"tasks": tasks.finish()}), done.after.fleet)
    return Step(done.verdict, done.before, after, kept, done.seats, done.fleet, done.marker, done.queue)


def step(before: Queue, event: Event, policy: QueuePolicy, where: Where | None = None) -> Step:
    """Fold one event (read at `where`, if known) into a queue and its fleet, and list the rows to write."""
    state, verdict = evolve(before.state, event, where)
    if state is before.state and not verdict.accepted:
        # A refused event changes nothing: no fleet sample (observe counts accepted events only), no rows.
        return Step(verdict, before, before, [], [], [], marker_of(event), event.queue)
    fleet = observe(before.fleet, before.state, state, event, verdict, policy)
    tasks, seats = touched(before.state, state, event)
    # A seat's holdings are derived from the task rows (QueueRows.state), so a seat row is
    # written only when the seat itself changed (join, leave).
    seats = [m for m in seats if _seat_changed(before.state.member(m.agent_id), m)]
    return Step(verdict, before, Queue(state, fleet), tasks, seats, fleet_writes(event.queue, before.fleet, fleet),
                marker_of(event), event.queue)


# The fold's state from its rows, and the rows an event touched

def rebuild(tasks: Iterable[Task], members: Iterable[Member],
            finished: Mapping[str, workingset.Finished] | None = None) -> QueueState:
    """The QueueState whose rows are these tasks and seats; `finished` tasks (by id) feed its
    indexes only, and stay out of its task map."""
    task_map: dict[str, Task] = {}
    idempotency: dict[str, str] = {}
    holders: dict[str, set[str]] = {}
    dependents: dict[str, set[str]] = {}
    arrivals = 0
    for task_id, left in (finished or {}).items():
        arrivals = max(arrivals, left.arrival + 1)
        if left.idempotency_key is not None:
            idempotency[left.idempotency_key] = task_id
        for dependency in left.depends_on:
            dependents.setdefault(dependency, set()).add(task_id)
    for task in tasks:
        task_map[task.task_id] = task
        arrivals = max(arrivals, task.arrival + 1)
        if task.idempotency_key is not None:
            idempotency[task.idempotency_key] = task.task_id
        if task.state.in_flight and task.concurrency_key is not None:
            holders.setdefault(task.concurrency_key, set()).add(task.task_id)
        for dependency in task.depends_on:
            dependents.setdefault(dependency, set()).add(task.task_id)
    seats = {}
    for seat in members:
        holding = frozenset(t for t in seat.holding if t in task_map)
        seats[seat.agent_id] = replace(seat, holding=holding)
    return QueueState(
        tasks=Map(task_map), members=Map(seats), idempotency=Map(idempotency),
        holders=Map({k: frozenset(v) for k, v in holders.items()}),
        dependents=Map({k: frozenset(v) for k, v in dependents.items()}), arrivals=arrivals,
        waiting=Map({t.task_id: order_of(t) for t in task_map.values() if t.state in SCHEDULABLE}),
    )


def touched(before: QueueState, after: QueueState, event: Event) -> tuple[list[Task], list[Member]]:
    """The task and seat rows that `event` changed (compared by identity, so it is cheap)."""
    if before is after:
        return [], []
    candidates = _candidate_tasks(before, event)
    tasks = [t for tid in sorted(candidates) if (t := after.tasks.get(tid)) is not before.tasks.get(tid) and t]
    agent = vars(event).get("agent_id")
    seats: set[str] = {agent} if agent else set()
    for task in tasks:
        old = before.tasks.get(task.task_id)
        seats.update(a for a in (task.agent_id, old.agent_id if old else None) if a)
    members = [m for aid in sorted(seats) if (m := after.members.get(aid)) is not before.members.get(aid) and m]
    return tasks, members


def affected_tasks(state: QueueState, event: Event) -> set[str]:
    """The ids of the tasks `event` may change: its own, a workflow's, a leaving agent's, and their dependents."""
    return _candidate_tasks(state, event)


def _candidate_tasks(before: QueueState, event: Event) -> set[str]:
    ids: set[str] = set()
    task_id = _event_task(event)
    if task_id:
        ids.add(task_id)
    if isinstance(event, WorkflowSubmitted):
        ids.update(workflow_task_id(event.workflow_id, node.node) for node in event.nodes)
    if isinstance(event, AgentLeft):
        seat = before.members.get(event.agent_id)
        ids.update(seat.holding if seat else ())
    # Settling a task reaches its dependents, transitively.
    frontier = list(ids)
    while frontier:
        for dependent in before.dependents.get(frontier.pop(), frozenset()):
            if dependent not in ids:
                ids.add(dependent)
                frontier.append(dependent)
    return ids


def is_waiting(task: Task) -> bool:
    """True for tasks a scheduler may still place (queued, scheduled, retry_wait)."""
    return task.state in (TaskState.queued, TaskState.scheduled, TaskState.retry_wait)
