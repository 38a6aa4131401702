"""The tasks view: each task's current row, its timings, and its full history.

Tables (keys NUL-joined):
* `tasks`           task_id, queue -> the task (fold fields, `shapes.task_json`) + `timings`,
                    `position` and `updated_at` of the last event that changed it
* `task_history`    task_id, queue, position key -> {position, partition, offset, event, verdict, task}
                    one row per event about the task, rejected and duplicate ones too; `task` is
                    the task row as it was right after that event (None before the task existed),
                    so the last row before a cut answers "what was true then" exactly
* `task_clock`      task_id, queue -> {timings, position, updated_at}: what the row adds to the fold
* `queue_events`    queue, position key -> {"task_id"} (the history row to read), or, for events
                    about no task (memberships), the row itself without `task`
* `tasks_by_queue`  queue, arrival -> task_id (a queue's tasks without scanning every task)
* `tasks_by_state`  state, queue, arrival -> task_id

Speed: this view writes the two biggest rows of every event. They are encoded once and
spliced (`Batch.raw`): the event's JSON goes into each history row as is, the task row's
JSON into its history row. Nothing here reads `tasks` or `task_history` back, which is
what makes writing them raw safe (a batch does not read raw writes back).
"""

from __future__ import annotations

import json
from typing import Any

from projections.store import Batch
from projections.view import Change, Telemetry
from projections.views.viewrows import SEP, arrival_key, join, task_json, task_key
from projections.views.timing import attempt_began, attempt_ended, ready_since, run_ms, wait_ms
from taskfold.core.events import Event
from taskfold.core.state import ACCEPTED as ACCEPTED_VERDICT
from taskfold.core.state import Task

TASKS = "tasks"
HISTORY = "task_history"
CLOCK = "task_clock"
QUEUE_EVENTS = "queue_events"
BY_QUEUE = "tasks_by_queue"
BY_STATE = "tasks_by_state"

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
ACCEPTED = b'{"outcome":"accepted","reason":null,"ref":null}'


def encoded(value: Any) -> bytes:
    """JSON bytes as the store writes them."""
    return _encode(value).encode()


def event_bytes(event: Event) -> bytes:
    """`shapes.event_json(event)` as JSON bytes, straight from pydantic's serializer."""
    body = event.__pydantic_serializer__.to_json(event)
    return b'{"type":' + encoded(event.event_type) + b"," + body[1:]


def timings(previous: dict[str, Any] | None, before: Task | None, after: Task, at: int) -> dict[str, Any]:
    """A task's timings once the event at time `at` turned `before` into `after`."""
    if previous is None:
        t = {"submitted_at": after.submitted_at, "queued_at": None, "ready_at": None, "first_assigned_at": None,
             "first_started_at": None, "finished_at": None, "queue_wait_ms": 0, "run_time_ms": 0, "attempts": 0}
    else:
        t = dict(previous)
    if attempt_began(before, after):
        t["queue_wait_ms"] += wait_ms(t["ready_at"], at)
        if t["first_assigned_at"] is None:
            t["first_assigned_at"] = at
    if attempt_ended(before, after):
        t["run_time_ms"] += run_ms(before, at)  # type: ignore[arg-type]
    ready = ready_since(before, after, at, t["ready_at"])
    t["ready_at"] = ready
    if ready is not None and t["queued_at"] is None:
        t["queued_at"] = ready
    if after.started_at is not None and t["first_started_at"] is None:
        t["first_started_at"] = after.started_at
    t["finished_at"] = after.finished_at
    t["attempts"] = after.attempt
    return t


def task_row(task: Task, clock: dict[str, Any] | None) -> dict[str, Any]:
    """The stored row of a task: the fold's fields and what the clock adds."""
    row = task_json(task)
    row["timings"] = clock["timings"] if clock else None
    row["position"] = clock["position"] if clock else None
    row["updated_at"] = clock["updated_at"] if clock else None
    return row


def history_head(change: Change) -> bytes:
    """A history row's JSON up to (not including) its `task`, and without the closing brace."""
    verdict = change.verdict
    verdict_bytes = ACCEPTED if verdict == ACCEPTED_VERDICT else encoded(
        {"outcome": verdict.outcome, "reason": verdict.reason, "ref": verdict.ref})
    return (f'{{"position":"{change.position}","partition":{change.partition},"offset":{change.offset},"event":'
            .encode() + event_bytes(change.event) + b',"verdict":' + verdict_bytes)


class TasksView:
    """Current rows, timings and history of every task."""

    name = "tasks"

    def apply(self, change: Change, rows: Batch) -> None:  # type: ignore[override]
        event = change.event
        queue = event.queue
        head = history_head(change)
        suffix = f"{SEP}{queue}{SEP}{change.key}"
        about: list[str] = []
        before_state = change.before.state
        for task in change.tasks:
            row = self._task(change, before_state.task(task.task_id), task, rows)
            rows.raw(HISTORY, (task.task_id + suffix).encode(), head + b',"task":' + row + b"}")
            about.append(task.task_id)
        task_id = event.task
        if task_id is not None and task_id not in about:  # rejected or duplicate: the task is as it was
            current = before_state.task(task_id)
            row = b"null" if current is None else encoded(task_row(current, rows.get(CLOCK, task_key(task_id, queue))))
            rows.raw(HISTORY, (task_id + suffix).encode(), head + b',"task":' + row + b"}")
            about.append(task_id)
        if about:
            rows.put(QUEUE_EVENTS, f"{queue}{SEP}{change.key}", {"task_id": about[0]})
        else:
            rows.raw(QUEUE_EVENTS, f"{queue}{SEP}{change.key}".encode(), head + b"}")

    def _task(self, change: Change, before: Task | None, after: Task, rows: Batch) -> bytes:
        """Write the task's rows and indexes; its row's JSON bytes."""
        queue, at = after.queue, change.event.occurred_at
        key = task_key(after.task_id, queue)
        previous = rows.get(CLOCK, key) if before is not None else None
        clock = {"timings": timings(previous["timings"] if previous else None, before, after, at),
                 "position": change.position, "updated_at": at}
        rows.put(CLOCK, key, clock)
        row = encoded(task_row(after, clock))
        rows.raw(TASKS, key.encode(), row)
        arrival = arrival_key(after.arrival)
        if before is None:
            rows.put(BY_QUEUE, join(queue, arrival), after.task_id)
        if before is None or before.state is not after.state:
            if before is not None:
                rows.delete(BY_STATE, join(before.state.value, queue, arrival))
            rows.put(BY_STATE, join(after.state.value, queue, arrival), after.task_id)
        return row

    def telemetry(self, item: Telemetry, rows: Batch) -> None:  # type: ignore[override]
        """Progress and heartbeats are not part of a task's row (see the transcripts view)."""
