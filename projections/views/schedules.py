"""The schedules view: each recurring schedule folded by `taskfold.core.scheduling.recurring`.

Tables (keys NUL-joined):
* `schedules`          queue, schedule_id -> `recurring.to_row` of the schedule (deleted ones
                       stay, marked, so a replayed event still finds them) + `position`
* `schedule_verdicts`  event_id -> {outcome, reason, queue, schedule_id, position}: the
                       schedules fold's verdict on each schedule event (a write reads it back)
"""

from __future__ import annotations

from projections.view import Change, Rows, Telemetry
from projections.views.viewrows import join
from taskfold.core.events import TaskSubmitted
from taskfold.core.scheduling.recurring import evolve_schedule, from_row, key_of, to_row

SCHEDULES = "schedules"
VERDICTS = "schedule_verdicts"


class SchedulesView:
    """Recurring schedules, their state, and the verdicts on their events."""

    name = "schedules"

    def apply(self, change: Change, rows: Rows) -> None:
        key = key_of(change.event)
        if key is None:
            return
        row_key = join(*key)
        row = rows.get(SCHEDULES, row_key)
        schedule, verdict = evolve_schedule(from_row(row) if row is not None else None, change.event)
        if schedule is not None and verdict.accepted:
            rows.put(SCHEDULES, row_key, to_row(schedule) | {"position": change.position})
        if not isinstance(change.event, TaskSubmitted):
            rows.put(VERDICTS, change.event.event_id, {
                "outcome": verdict.outcome, "reason": verdict.reason, "queue": key[0], "schedule_id": key[1],
                "position": change.position})

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        """Schedules are made of events only."""
