"""The beat without a broker: what it folds, and that it fires only for the partitions it owns."""

from __future__ import annotations

from streams.beat import Beat
from taskfold.broker.topics import TopicNames
from taskfold.core.events import ScheduleCreated, TaskSubmitted
from taskfold.log.records import ConsumedRecord
from taskfold.log.wire import encode_event

T0 = 1_767_225_600_000


def record(event, partition: int, offset: int) -> ConsumedRecord:
    value, headers = encode_event(event)
    return ConsumedRecord("taskfold.events", partition, offset, T0, event.queue, value, tuple(headers))


def beat(owned: set[int] | None, now: list[int]) -> Beat:
    return Beat("unused:9092", TopicNames(), tansu=True, actor="beat-1", clock_ms=lambda: now[0],
                owned=lambda: owned, tick_ms=100)


def made(queue: str, schedule_id: str) -> ScheduleCreated:
    return ScheduleCreated(event_id=f"c-{schedule_id}", queue=queue, occurred_at=T0, actor="t",
                           schedule_id=schedule_id, interval_ms=1000, task_type="tick")


async def test_fires_only_the_schedules_on_owned_partitions_and_folds_what_it_fired() -> None:
    now = [T0 + 1000]
    b = beat({0}, now)
    b.fold(record(made("mine", "a"), 0, 0))
    b.fold(record(made("theirs", "b"), 1, 0))
    appended: list = []

    async def append(events) -> None:
        appended.extend(events)

    fired = await b.tick(append)
    assert [e.task_id for e in fired] == ["sched:a:1767225601000"] and appended == fired
    now[0] += 50  # within tick_ms: not looked at again
    assert await b.tick(append) == []
    now[0] += 100  # the slot it fired is folded already: nothing due until the next one
    assert await b.tick(append) == []


async def test_fires_nothing_before_it_owns_a_partition_and_skips_other_submits() -> None:
    now = [T0 + 5000]
    b = beat(None, now)
    b.fold(record(made("mine", "a"), 0, 0))
    other = TaskSubmitted(event_id="x", queue="mine", occurred_at=T0, actor="t", task_id="plain", task_type="t",
                          causation_id="schedule:a:1767225609000")
    b.fold(record(other, 0, 1))  # not a fired slot (its task id says so): not folded
    assert b.read == {0: 2}
    assert await b.tick(lambda events: None) == []
    b.owned = lambda: {0}
    now[0] += 100
    assert len(await b.tick(lambda events: _noop())) == 5


async def _noop() -> None:
    return None
