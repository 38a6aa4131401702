"""The fold's working set: which finished tasks may leave memory, and which an event needs back.

Shared by the scheduler (streams/scheduler.py) and the projections' rebuild
(projections/workingset.py). A processor keeps every task row in its store; in memory it
needs only what the fold reads. A finished task (completed, dead-lettered, cancelled) is
read again only when an event names it, so it may leave a queue's `QueueState.tasks` once
its row is stored, and be read back before the event that names it is folded:

1. the event's own task (`task_id`): a duplicate by event id, a late report, a resubmit
   of the id, a cancel, a redrive of a dead-lettered task;
2. a workflow's node tasks (`uuid5(workflow_id, node)`): its duplicate and clash checks;
3. a submit's dependencies (`depends_on`): their outcomes;
4. the owner of a submit's idempotency key, when the state's key index no longer has it
   (`key_owner`; the scheduler keeps its keys in the index, the rebuild in its store).

Dependents are not read back: the fold skips a dependent that is not blocked, and one that
left memory is finished. A leaving agent's holdings are in flight, so in memory. Only the
task map shrinks; the state's indexes (keys, dependents, arrivals) are the full fold's, so
every verdict and row is the one a fold that kept everything gives (tests/unit/
test_scheduler_workingset.py and test_projection_workingset.py fold both ways).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from taskfold.core.events import Event, TaskSubmitted, WorkflowSubmitted
from taskfold.core.policies import workflow_task_id
from taskfold.core.state import TERMINAL, QueueState, Task


def wanted(state: QueueState, event: Event, key_owner: Callable[[str], str | None] = lambda key: None) -> list[str]:
    """Ids of the tasks the fold may read for `event` (rules 1-4) that are not in memory, sorted."""
    ids = {task_id} if (task_id := vars(event).get("task_id")) is not None else set()
    if isinstance(event, WorkflowSubmitted):
        ids.update(workflow_task_id(event.workflow_id, node.node) for node in event.nodes)
    if isinstance(event, TaskSubmitted):
        ids.update(event.depends_on)
        key = event.idempotency_key
        if key is not None and key not in state.idempotency and (owner := key_owner(key)) is not None:
            ids.add(owner)
    return sorted(tid for tid in ids if tid not in state.tasks)


def recalled(state: QueueState, back: Iterable[Task]) -> QueueState:
    """The state with stored tasks put back, and their idempotency keys if the index lacks them."""
    back = list(back)
    if not back:
        return state
    tasks, keys = state.tasks.mutate(), state.idempotency.mutate()
    for task in back:
        tasks[task.task_id] = task
        if task.idempotency_key is not None and task.idempotency_key not in keys:
            keys[task.idempotency_key] = task.task_id
    return replace(state, tasks=tasks.finish(), idempotency=keys.finish())


def may_leave(state: QueueState, task: Task | None) -> bool:
    """True for a finished task that no seat still counts as held (its row must be stored first)."""
    if task is None or task.state not in TERMINAL:
        return False
    seat = state.members.get(task.agent_id) if task.agent_id is not None else None
    return seat is None or task.task_id not in seat.holding


def without(state: QueueState, ids: Iterable[str]) -> QueueState:
    """The state with the finished tasks among `ids` out of memory; its indexes are kept."""
    gone = [tid for tid in ids if may_leave(state, state.tasks.get(tid))]
    if not gone:
        return state
    tasks = state.tasks.mutate()
    for tid in gone:
        del tasks[tid]
    return replace(state, tasks=tasks.finish())


@dataclass(frozen=True, slots=True)
class Finished:
    """What the indexes need of a finished task row that is not decoded."""

    arrival: int
    idempotency_key: str | None
    depends_on: tuple[str, ...]


_STATE, _ARRIVAL, _KEY, _NO_DEPS = b',"state":"', b',"arrival":', b',"idempotency_key":', b',"depends_on":[]'
_TERMINAL = frozenset(s.value.encode() for s in TERMINAL)


def finished_row(raw: bytes) -> Finished | None:
    """The index fields of a stored Task row if it is finished, None if not (then decode it whole).

    A restart reads every stored row; a finished one is about 0.5 µs this way, 21 µs decoded.
    Row JSON escapes every quote inside a string, so `,"state":"` is only ever a key.
    """
    at = raw.find(_STATE)
    if at < 0:
        return None
    begin = at + len(_STATE)
    if raw[begin:raw.find(b'"', begin)] not in _TERMINAL:
        return None
    if raw.find(_NO_DEPS) < 0 or raw.find(_ARRIVAL) < 0 or raw.find(_KEY) < 0:
        body = json.loads(raw)  # a task with dependencies (or an unexpected shape): read it all
        return Finished(int(body["arrival"]), body.get("idempotency_key"), tuple(body.get("depends_on") or ()))
    return Finished(_int_after(raw, _ARRIVAL), _key_after(raw), ())


def _int_after(raw: bytes, name: bytes) -> int:
    begin = raw.find(name) + len(name)
    end = begin
    while raw[end:end + 1].isdigit():
        end += 1
    return int(raw[begin:end])


def _key_after(raw: bytes) -> str | None:
    begin = raw.find(_KEY) + len(_KEY)
    if raw.startswith(b"null", begin):
        return None
    value, _ = _DECODER.raw_decode(raw[begin:].decode())
    return value


_DECODER = json.JSONDecoder()
