"""Recurring schedules (issue 15): a pure fold of schedule events, and which slots are due.

A schedule lives in its target queue's partition (its events are keyed by that queue), so
its definition, its pauses and the tasks it fired are one ordered stream, and its state is
a fold of that stream: `evolve_schedule(schedule, event) -> (schedule, verdict)`. No clock
here: the processor that fires (`streams/beat.py`) passes `now_ms`.

Slots and misfires, in order:
1. A slot is a time the schedule fires: a match of its cron expression read in its
   timezone (cronsim: a local time skipped by a DST change fires at the first minute after
   the gap, a repeated one fires once), or `anchor + k * interval_ms`, where the anchor is
   `start_at`, else the creation time.
2. The cursor is the latest slot fired (read back from the log), or the creation or
   resume time: only slots after it may fire. Slots of a pause never fire.
3. At `now_ms`, a due slot no older than `misfire_grace_ms` fires, late but in time. Older
   ones are misfires (downtime): `skip` drops them, `run_once` fires the latest of them once.
4. A slot's task id is `sched:<schedule id>:<slot ms>`, its event id a uuid5 of the same,
   and its causation_id `schedule:<schedule id>:<slot ms>` (how the fold finds the slot
   again). The fold takes a second submit of a slot as a duplicate, so a restart, a
   rebalance or two processors never fire a slot twice.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from taskfold.core.events import (Event, MisfirePolicy, ScheduleCreated, ScheduleDeleted, SchedulePaused,
                             ScheduleResumed, TaskSubmitted)
from taskfold.core.state import ACCEPTED, Verdict, duplicate, rejected

FIRE_LIMIT = 100  # slots one call fires at most; the rest are due at the next tick
CAUSE = "schedule:"
TASK_PREFIX = "sched:"
_NAMESPACE = uuid.UUID("6c1f3f55-52a4-4c51-9a39-8b0f7e3a1d15")


@dataclass(frozen=True, slots=True)
class Schedule:
    """One schedule's folded state."""

    definition: ScheduleCreated
    cursor: int  # ms: slots at or before it are fired or passed
    paused: bool = False
    deleted: bool = False
    fired: int = 0
    last_slot: int | None = None
    event_ids: frozenset[str] = frozenset()

    @property
    def schedule_id(self) -> str:
        return self.definition.schedule_id

    @property
    def queue(self) -> str:
        return self.definition.queue

    @property
    def anchor(self) -> int:
        """Where interval slots count from."""
        d = self.definition
        return d.start_at if d.start_at is not None else d.occurred_at

    def noting(self, event_id: str, **changes: object) -> Schedule:
        """A copy with the changes applied and the event id recorded."""
        return replace(self, event_ids=self.event_ids | {event_id}, **changes)


def definition_problems(created: ScheduleCreated) -> list[tuple[str, str]]:
    """(field, reason) for every way the definition cannot be fired; empty when it can."""
    problems: list[tuple[str, str]] = []
    if (created.cron is None) == (created.interval_ms is None):
        problems.append(("cron", "give exactly one of cron and interval_ms"))
    try:
        ZoneInfo(created.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(("timezone", f"unknown timezone {created.timezone!r} (an IANA name such as Europe/Berlin)"))
    if created.cron is not None:
        try:
            CronSim(created.cron, datetime(2000, 1, 1, tzinfo=timezone.utc))
        except CronSimError as exc:
            problems.append(("cron", f"{created.cron!r} is not a cron expression: {exc}"))
    return problems


def fired_slot(event: TaskSubmitted) -> tuple[str, int] | None:
    """(schedule id, slot ms) of a task a schedule fired, from its causation_id; None otherwise."""
    cause = event.causation_id or ""
    if not cause.startswith(CAUSE):
        return None
    schedule_id, _, slot = cause[len(CAUSE):].rpartition(":")
    return (schedule_id, int(slot)) if schedule_id and slot.isdigit() else None


def key_of(event: Event) -> tuple[str, str] | None:
    """(queue, schedule id) the event is about, or None when it is about no schedule."""
    if isinstance(event, TaskSubmitted):
        slot = fired_slot(event)
        return None if slot is None else (event.queue, slot[0])
    schedule_id = getattr(event, "schedule_id", None)
    return None if schedule_id is None else (event.queue, schedule_id)


def evolve_schedule(schedule: Schedule | None, event: Event) -> tuple[Schedule | None, Verdict]:
    """Apply one event about a schedule (or a task it fired) and say whether it counted."""
    if schedule is not None and event.event_id in schedule.event_ids:
        return schedule, duplicate("event already applied")
    live = schedule if schedule is not None and not schedule.deleted else None
    match event:
        case ScheduleCreated():
            return _create(schedule, live, event)
        case SchedulePaused():
            if live is None:
                return schedule, rejected(f"schedule_id: no schedule {event.schedule_id} in queue {event.queue}")
            if live.paused:
                return schedule, rejected(f"schedule {event.schedule_id} is already paused")
            return live.noting(event.event_id, paused=True), ACCEPTED
        case ScheduleResumed():
            if live is None:
                return schedule, rejected(f"schedule_id: no schedule {event.schedule_id} in queue {event.queue}")
            if not live.paused:
                return schedule, rejected(f"schedule {event.schedule_id} is not paused")
            return live.noting(event.event_id, paused=False, cursor=max(live.cursor, event.occurred_at)), ACCEPTED
        case ScheduleDeleted():
            if live is None:
                return schedule, rejected(f"schedule_id: no schedule {event.schedule_id} in queue {event.queue}")
            return live.noting(event.event_id, deleted=True), ACCEPTED
        case TaskSubmitted():
            return _fired(live, event)
    return schedule, rejected(f"event type {type(event).__name__} is not about a schedule")


def _create(schedule: Schedule | None, live: Schedule | None,
            event: ScheduleCreated) -> tuple[Schedule | None, Verdict]:
    if live is not None:
        return schedule, rejected(f"schedule_id: schedule {event.schedule_id} already exists in queue {event.queue}")
    problems = definition_problems(event)
    if problems:
        return schedule, rejected("; ".join(f"{field}: {reason}" for field, reason in problems))
    # start_at - 1: a slot exactly at start_at fires; without it, the first slot follows creation.
    cursor = event.start_at - 1 if event.start_at is not None else event.occurred_at
    ids = schedule.event_ids if schedule is not None else frozenset()
    return Schedule(event, cursor=cursor, event_ids=ids | {event.event_id}), ACCEPTED


def _fired(live: Schedule | None, event: TaskSubmitted) -> tuple[Schedule | None, Verdict]:
    slot = fired_slot(event)
    if live is None or slot is None:
        return live, rejected(f"task {event.task_id} was fired by no live schedule")
    if live.last_slot is not None and slot[1] <= live.last_slot:
        return live, duplicate(f"slot {slot[1]} of schedule {live.schedule_id} already fired")
    return replace(live, cursor=max(live.cursor, slot[1]), fired=live.fired + 1, last_slot=slot[1]), ACCEPTED


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def slots_after(schedule: Schedule, after_ms: int) -> Iterator[int]:
    """The schedule's slots strictly after `after_ms`, in order (endless)."""
    d = schedule.definition
    if d.interval_ms is not None:
        k = max(0, (after_ms - schedule.anchor) // d.interval_ms + 1)
        while True:
            yield schedule.anchor + k * d.interval_ms
            k += 1
    assert d.cron is not None  # definition_problems admits only one of the two
    for moment in CronSim(d.cron, _utc(after_ms).astimezone(ZoneInfo(d.timezone))):
        yield _ms(moment)


def last_slot_before(schedule: Schedule, before_ms: int) -> int | None:
    """The schedule's latest slot strictly before `before_ms`, if any."""
    d = schedule.definition
    if d.interval_ms is not None:
        if before_ms <= schedule.anchor:
            return None
        return schedule.anchor + (before_ms - 1 - schedule.anchor) // d.interval_ms * d.interval_ms
    assert d.cron is not None
    return _ms(next(CronSim(d.cron, _utc(before_ms).astimezone(ZoneInfo(d.timezone)), reverse=True)))


def due_slots(schedule: Schedule, now_ms: int) -> list[int]:
    """The slots to fire at `now_ms` (steps 2 and 3 above), oldest first, at most FIRE_LIMIT."""
    if schedule.paused or schedule.deleted:
        return []
    first = next(slots_after(schedule, schedule.cursor))
    if first > now_ms:
        return []
    edge = now_ms - schedule.definition.misfire_grace_ms  # a slot before it is a misfire
    fires: list[int] = []
    start = schedule.cursor
    if first < edge:
        if schedule.definition.misfire == MisfirePolicy.run_once:
            fires.append(last_slot_before(schedule, edge))  # type: ignore[arg-type]  # first < edge: one exists
        start = edge - 1
    for slot in slots_after(schedule, start):
        if slot > now_ms or len(fires) >= FIRE_LIMIT:
            break
        fires.append(slot)
    return fires


def fire(schedule: Schedule, slot: int, now_ms: int, actor: str) -> TaskSubmitted:
    """The TaskSubmitted of one slot: its ids derive from the schedule and the slot (step 4)."""
    d = schedule.definition
    name = f"{d.schedule_id}:{slot}"
    return TaskSubmitted(
        event_id=str(uuid.uuid5(_NAMESPACE, f"{d.queue}/{name}")), queue=d.queue, occurred_at=now_ms, actor=actor,
        causation_id=CAUSE + name, correlation_id=CAUSE + d.schedule_id, task_id=TASK_PREFIX + name,
        task_type=d.task_type, priority=d.priority, payload=d.payload, timeout_ms=d.timeout_ms,
        max_attempts=d.max_attempts, concurrency_key=d.concurrency_key, concurrency_limit=d.concurrency_limit,
        labels=d.labels, required_capabilities=d.required_capabilities)


class ScheduleBook:
    """Every schedule seen, by (queue, schedule id), folded event by event in log order."""

    def __init__(self) -> None:
        self.schedules: dict[tuple[str, str], Schedule] = {}

    def apply(self, event: Event) -> Verdict | None:
        """Fold one event; its verdict, or None when it is about no schedule."""
        key = key_of(event)
        if key is None:
            return None
        schedule, verdict = evolve_schedule(self.schedules.get(key), event)
        if schedule is not None:
            self.schedules[key] = schedule
        return verdict

    def due(self, now_ms: int, actor: str) -> list[TaskSubmitted]:
        """The submits every live schedule owes at `now_ms`."""
        return [fire(s, slot, now_ms, actor) for s in self.schedules.values() for slot in due_slots(s, now_ms)]


def next_slot(schedule: Schedule, now_ms: int) -> int | None:
    """When the schedule fires next as seen at `now_ms` (None: paused or deleted)."""
    if schedule.paused or schedule.deleted:
        return None
    return next(slots_after(schedule, max(schedule.cursor, now_ms - 1)))


def describe(schedule: Schedule, now_ms: int | None = None) -> dict[str, object]:
    """The schedule as the CLI and the HTTP API show it (JSON values)."""
    d = schedule.definition
    template = d.model_dump(mode="json", include={"task_type", "priority", "timeout_ms", "max_attempts",
                                                  "concurrency_key", "concurrency_limit", "labels",
                                                  "required_capabilities"})
    return {"schedule_id": d.schedule_id, "queue": d.queue, "cron": d.cron, "timezone": d.timezone,
            "interval_ms": d.interval_ms, "start_at": d.start_at, "misfire": d.misfire.value,
            "misfire_grace_ms": d.misfire_grace_ms, "task": template | {"payload": json.loads(d.payload)},
            "state": "deleted" if schedule.deleted else "paused" if schedule.paused else "active",
            "created_at": d.occurred_at, "fired": schedule.fired, "last_slot": schedule.last_slot,
            "next_slot": None if now_ms is None else next_slot(schedule, now_ms)}


def to_row(schedule: Schedule) -> dict[str, object]:
    """The whole folded schedule as JSON values (a projection row); `from_row` reads it back."""
    return {"definition": schedule.definition.model_dump(mode="json"), "cursor": schedule.cursor,
            "paused": schedule.paused, "deleted": schedule.deleted, "fired": schedule.fired,
            "last_slot": schedule.last_slot, "event_ids": sorted(schedule.event_ids)}


def from_row(row: dict) -> Schedule:
    """The schedule `to_row` wrote."""
    return Schedule(ScheduleCreated.model_validate(row["definition"]), cursor=row["cursor"], paused=row["paused"],
                    deleted=row["deleted"], fired=row["fired"], last_slot=row["last_slot"],
                    event_ids=frozenset(row["event_ids"]))
