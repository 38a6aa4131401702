"""Recurring schedules, pure: next fires (timezones, DST, intervals), misfires, and the fold."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from taskfold.audit.invariants import audit_events
from taskfold.core.events import ScheduleCreated, ScheduleDeleted, SchedulePaused, ScheduleResumed
from taskfold.core.fold import Ledger
from taskfold.core.scheduling.recurring import (Schedule, ScheduleBook, definition_problems, due_slots, evolve_schedule,
                                           fire, fired_slot, slots_after)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
BERLIN = ZoneInfo("Europe/Berlin")


def created(**fields: object) -> ScheduleCreated:
    base: dict[str, object] = dict(event_id="c1", queue="q", occurred_at=T0, actor="t", schedule_id="s1",
                                   task_type="report")
    if "cron" not in fields:
        base["interval_ms"] = 1000
    return ScheduleCreated(**(base | fields))


def schedule(**fields: object) -> Schedule:
    s, verdict = evolve_schedule(None, created(**fields))
    assert verdict.accepted, verdict
    assert s is not None
    return s


def local(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=BERLIN).isoformat()


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def take(it, n: int) -> list[int]:
    return [next(it) for _ in range(n)]


def test_interval_slots_count_from_creation_or_start_at() -> None:
    assert take(slots_after(schedule(), T0), 3) == [T0 + 1000, T0 + 2000, T0 + 3000]
    s = schedule(start_at=T0 + 500)
    assert take(slots_after(s, s.cursor), 2) == [T0 + 500, T0 + 1500]


def test_cron_is_read_in_its_timezone() -> None:
    s = schedule(cron="0 9 * * *", timezone="America/New_York")
    first = next(slots_after(s, T0))
    assert datetime.fromtimestamp(first / 1000, tz=ZoneInfo("America/New_York")).isoformat() == \
        "2026-01-01T09:00:00-05:00"


def test_dst_spring_forward_fires_once_after_the_gap() -> None:
    s = schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    fires = take(slots_after(s, ms("2026-03-28T12:00:00+01:00")), 3)
    assert [local(f) for f in fires] == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00",
                                         "2026-03-31T02:30:00+02:00"]


def test_dst_fall_back_fires_a_repeated_hour_once() -> None:
    s = schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    fires = take(slots_after(s, ms("2026-10-24T12:00:00+02:00")), 3)
    assert [local(f) for f in fires] == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00",
                                         "2026-10-27T02:30:00+01:00"]


def test_bad_definitions_name_the_field() -> None:
    assert definition_problems(created(cron="61 * * * *", interval_ms=None))[0][0] == "cron"
    assert definition_problems(created(timezone="Mars/Olympus"))[0][0] == "timezone"
    assert definition_problems(created(cron="* * * * *", interval_ms=1000))[0] == ("cron", "give exactly one of cron and interval_ms")
    _, verdict = evolve_schedule(None, created(timezone="Mars/Olympus"))
    assert verdict.outcome == "rejected" and verdict.reason.startswith("timezone: unknown timezone")


def test_due_slots_in_time_all_fire_late_ones_within_grace_too() -> None:
    s = schedule(misfire_grace_ms=5000)
    assert due_slots(s, T0 + 999) == []
    assert due_slots(s, T0 + 1000) == [T0 + 1000]
    assert due_slots(s, T0 + 3500) == [T0 + 1000, T0 + 2000, T0 + 3000]


def test_misfire_skip_drops_slots_older_than_the_grace() -> None:
    s = schedule(misfire_grace_ms=2000)
    assert due_slots(s, T0 + 10_500) == [T0 + 9000, T0 + 10_000]


def test_misfire_run_once_fires_the_latest_missed_slot_once() -> None:
    s = schedule(misfire_grace_ms=2000, misfire="run_once")
    assert due_slots(s, T0 + 10_500) == [T0 + 8000, T0 + 9000, T0 + 10_000]
    cron = schedule(cron="0 * * * *", interval_ms=None, misfire="run_once", misfire_grace_ms=60_000)
    assert due_slots(cron, T0 + 5 * 3_600_000 + 1800_000) == [T0 + 5 * 3_600_000]
    assert due_slots(replace_policy(cron, "skip"), T0 + 5 * 3_600_000 + 1800_000) == []


def replace_policy(s: Schedule, policy: str) -> Schedule:
    return schedule(**(s.definition.model_dump() | {"misfire": policy}))


def test_a_fired_slot_read_back_moves_the_cursor_and_a_repeat_is_a_duplicate() -> None:
    book = ScheduleBook()
    assert book.apply(created()).accepted
    (first,) = book.due(T0 + 1000, "beat")
    assert first.task_id == "sched:s1:1767225601000" and fired_slot(first) == ("s1", T0 + 1000)
    assert book.apply(first).accepted
    assert book.apply(first).outcome == "duplicate"
    assert book.due(T0 + 1500, "beat") == []
    assert [f.task_id for f in book.due(T0 + 2000, "beat")] == ["sched:s1:1767225602000"]


def test_the_task_fold_takes_a_refired_slot_as_a_duplicate() -> None:
    s = schedule()
    once, again = fire(s, T0 + 1000, T0 + 1000, "beat-1"), fire(s, T0 + 1000, T0 + 1700, "beat-2")
    ledger = Ledger()
    assert [ledger.apply(e).outcome for e in (created(), once, again)] == ["accepted", "accepted", "duplicate"]


def test_pause_resume_delete() -> None:
    book = ScheduleBook()
    book.apply(created())
    env = dict(queue="q", actor="t", schedule_id="s1")
    assert book.apply(SchedulePaused(event_id="p", occurred_at=T0 + 100, **env)).accepted
    assert book.due(T0 + 5000, "beat") == []
    assert book.apply(SchedulePaused(event_id="p2", occurred_at=T0 + 100, **env)).outcome == "rejected"
    assert book.apply(ScheduleResumed(event_id="r", occurred_at=T0 + 5500, **env)).accepted
    # Slots of the pause never fire: the first is the one after the resume.
    assert [fired_slot(f)[1] for f in book.due(T0 + 6000, "beat")] == [T0 + 6000]
    assert book.apply(ScheduleDeleted(event_id="d", occurred_at=T0 + 6100, **env)).accepted
    assert book.due(T0 + 9000, "beat") == []
    unknown = book.apply(SchedulePaused(event_id="p3", occurred_at=T0, queue="q", actor="t", schedule_id="nope"))
    assert unknown.outcome == "rejected" and "no schedule nope" in unknown.reason


def test_creating_an_existing_schedule_is_rejected_and_a_replay_is_a_duplicate() -> None:
    book = ScheduleBook()
    assert book.apply(created()).accepted
    assert book.apply(created()).outcome == "duplicate"
    assert book.apply(created(event_id="c2")).outcome == "rejected"


@pytest.mark.parametrize("policy", ["skip", "run_once"])
def test_fire_copies_the_template(policy: str) -> None:
    s = schedule(misfire=policy, priority="high", payload='{"a": 1}', labels={"x": "y"}, max_attempts=2)
    event = fire(s, T0 + 1000, T0 + 1200, "beat")
    assert (event.priority.value, event.payload, event.labels, event.max_attempts, event.occurred_at) == \
        ("high", '{"a": 1}', {"x": "y"}, 2, T0 + 1200)


def test_the_audit_finds_nothing_wrong_with_schedules_and_their_fires() -> None:
    book = ScheduleBook()
    made = created()
    book.apply(made)
    fires = book.due(T0 + 3000, "beat")
    env = dict(queue="q", actor="t", schedule_id="s1")
    events = [made, *fires, fires[0], SchedulePaused(event_id="p", occurred_at=T0 + 3100, **env),
              ScheduleResumed(event_id="r", occurred_at=T0 + 3200, **env),
              ScheduleDeleted(event_id="d", occurred_at=T0 + 3300, **env)]
    report = audit_events(events, require_terminal=False)
    assert report.violations == [] and report.accepted == len(events) - 1
