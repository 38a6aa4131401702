"""`replaced` and `created`, the fold's cheap copies of frozen rows, behave like
`dataclasses.replace` and the class itself."""

from __future__ import annotations

import dataclasses

import pytest

from taskfold.core.events import Backoff, Priority
from taskfold.core.state import EMPTY, Member, QueueState, Task, TaskState, created, replaced

FIELDS = dict(task_id="t", queue="q", task_type="echo", priority=Priority.high, payload="null",
              state=TaskState.queued, arrival=3, submitted_at=5, timeout_ms=10, max_attempts=2, backoff=Backoff())


def test_a_replaced_task_equals_dataclasses_replace_and_stays_frozen() -> None:
    task = Task(**FIELDS)
    changes = {"state": TaskState.running, "attempt": 2, "agent_id": "a", "event_ids": frozenset({"e"})}
    copy = replaced(task, changes)
    assert type(copy) is Task
    assert copy == dataclasses.replace(task, **changes)
    assert hash(copy) == hash(dataclasses.replace(task, **changes))
    assert task.state == TaskState.queued  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.state = TaskState.queued  # type: ignore[misc]


def test_replaced_carries_every_field_of_every_row_it_copies() -> None:
    seat = Member("a", slots=2, capabilities=frozenset({"gpu"}), labels=(("zone", "eu"),), joined_at=7)
    assert replaced(seat, {"holding": frozenset({"t"})}) == dataclasses.replace(seat, holding=frozenset({"t"}))
    assert replaced(EMPTY, {"arrivals": 4}) == QueueState(arrivals=4)
    assert replaced(seat, {}) == seat


def test_replaced_names_a_field_the_row_does_not_have() -> None:
    with pytest.raises(TypeError, match="Task has no field 'colour'"):
        replaced(Task(**FIELDS), {"colour": "red"})


def test_created_equals_the_constructor_and_names_what_is_missing() -> None:
    assert created(Task, FIELDS) == Task(**FIELDS)
    assert type(created(Task, FIELDS)) is Task
    assert created(QueueState, {"arrivals": 2}) == QueueState(arrivals=2)
    assert created(QueueState, {}).tasks is not created(QueueState, {}).holders  # factories run per call
    with pytest.raises(TypeError, match="Task needs the field 'payload'"):
        created(Task, {k: v for k, v in FIELDS.items() if k != "payload"})
