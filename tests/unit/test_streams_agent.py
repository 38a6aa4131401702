"""The scheduler agent without a broker: faust's `test_context()` and a memory store.

The topology comes from the same `streams.app.build` that `taskfold worker` uses; only the
outbox (a recorder), the catch-up (every partition read to its end) and the clock differ.
Given events read from the log, when the agent processes them, then these are appended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from streams.app import Topology, WorkerOptions, build
from streams.processor import Always, Processed
from streams.scheduler import Scheduler
from taskfold.broker.topics import queue_partition
from taskfold.broker.topics import TopicNames
from taskfold.core.events import Event, TaskAssigned, TaskLeaseExpired
from taskfold.core.testing import Events
from taskfold.log.records import ConsumedRecord
from taskfold.log.wire import encode_event

QUEUE = "q"
PARTITION = queue_partition(QUEUE, 4)  # where the producer puts the queue's events


@dataclass
class Recorder:
    """An outbox that keeps what the processor appends or quarantines."""

    appended: list[Event] = field(default_factory=list)
    poison: list[tuple[ConsumedRecord, str]] = field(default_factory=list)

    async def append(self, events: list[Event]) -> None:
        self.appended.extend(events)

    async def quarantine(self, record: ConsumedRecord, reason: str) -> None:
        self.poison.append((record, reason))


@dataclass
class Clock:
    now: int = 10_000

    def __call__(self) -> int:
        return self.now


@dataclass
class World:
    """The topology under test, its agent in test mode, and helpers to feed it."""

    topology: Topology
    agent: object
    outbox: Recorder
    clock: Clock
    events: Events

    async def read(self, event: Event | bytes | None) -> Processed:
        """Deliver one record of `events` (an event, raw bytes, or no value) to the agent."""
        value, headers = encode_event(event) if isinstance(event, Event) else (event, [])
        await self.agent.put(value, key=QUEUE.encode(), partition=PARTITION, headers=headers)
        return self.agent.results[self.agent.processed_offset - 1]

    async def read_back(self, events: list[Event]) -> list[Processed]:
        """The log gives our own appends back, in order."""
        return [await self.read(e) for e in events]

    @property
    def scheduler(self) -> Scheduler:
        return self.topology.processor.scheduler


@pytest.fixture
async def world() -> AsyncIterator[World]:
    outbox, clock = Recorder(), Clock()
    options = WorkerOptions(store="memory://", read_heartbeats=False)
    topology = build("127.0.0.1:1", TopicNames("unit."), tansu=False, partitions=4, options=options,
                     outbox=outbox, catch_up=Always(), clock_ms=clock)
    async with topology.agent.test_context() as agent:
        yield World(topology, agent, outbox, clock, Events(queue=QUEUE, now=clock.now - 100))


async def test_a_submitted_task_with_a_joined_agent_is_assigned(world: World) -> None:
    await world.read(world.events.join("a1", slots=1))
    outcome = await world.read(world.events.submit("t1"))
    assert outcome.verdict.accepted
    (assigned,) = world.outbox.appended
    assert isinstance(assigned, TaskAssigned)
    assert (assigned.task_id, assigned.agent_id, assigned.attempt) == ("t1", "a1", 1)
    assert assigned.occurred_at == world.clock.now and assigned.queue == QUEUE
    assert outcome.appended == (assigned,)


async def test_a_decision_counts_once_read_back_and_is_not_repeated_meanwhile(world: World) -> None:
    await world.read(world.events.join("a1", slots=2))
    await world.read(world.events.submit("t1"))
    await world.read(world.events.submit("t2"))  # decided while t1's assignment is still pending
    first, second = world.outbox.appended
    assert {first.task_id, second.task_id} == {"t1", "t2"}
    assert len(world.scheduler.pending) == 2
    outcomes = await world.read_back([first, second])
    assert [o.verdict.outcome for o in outcomes] == ["accepted", "accepted"]
    assert all(o.ours for o in outcomes) and len(world.scheduler.pending) == 0
    assert world.outbox.appended == [first, second]  # nothing decided twice


async def test_the_next_task_is_assigned_when_the_agent_completes(world: World) -> None:
    e = world.events
    await world.read(e.join("a1", slots=1))
    await world.read(e.submit("t1"))
    await world.read(e.submit("t2"))
    await world.read_back(list(world.outbox.appended))
    assert [a.task_id for a in world.outbox.appended] == ["t1"]
    await world.read(e.start("t1", "a1"))
    outcome = await world.read(e.complete("t1", "a1"))
    assert [a.task_id for a in outcome.appended] == ["t2"]


async def test_poison_is_forwarded_and_counted_and_processing_goes_on(world: World) -> None:
    garbage = await world.read(b"\xc3\x01not an event at all")
    empty = await world.read(None)
    assert "fingerprint" in garbage.poison and empty.poison == "empty record (no value)"
    assert [reason for _, reason in world.outbox.poison] == [garbage.poison, empty.poison]
    record, _ = world.outbox.poison[0]
    assert (record.partition, record.offset, record.value) == (PARTITION, 0, b"\xc3\x01not an event at all")
    assert world.topology.processor.counts["poison"] == 2
    outcome = await world.read(world.events.join("a1"))
    assert outcome.verdict.accepted


async def test_a_duplicate_event_is_dropped_by_the_fold(world: World) -> None:
    e = world.events
    await world.read(e.join("a1", slots=1))
    submit = e.submit("t1")
    await world.read(submit)
    again = await world.read(submit)  # redelivered at a later offset (a producer retry)
    assert again.verdict.outcome == "duplicate"
    assert len(world.outbox.appended) == 1 and again.appended == ()


async def test_rows_persisted_by_the_agent_rebuild_the_same_state(world: World) -> None:
    e = world.events
    await world.read(e.join("a1", slots=2, capabilities=["gpu"]))
    await world.read(e.submit("t1", session_id="s", concurrency_key="k"))
    await world.read(e.submit("t2", required_capabilities=["gpu"]))
    await world.read_back(list(world.outbox.appended))
    await world.read(e.start("t1", "a1"))
    await world.read(e.fail("t2", "a1", retryable=True))
    rebuilt = Scheduler({}, partitions=4)
    rebuilt.load(world.topology.table.items())
    assert rebuilt.queues == world.scheduler.queues


async def test_a_record_below_the_stored_offset_is_skipped(world: World) -> None:
    e = world.events
    await world.read(e.cancel("t1"))  # rejected: t1 is unknown at this point of the log
    await world.read(e.submit("t1"))
    scheduler = Scheduler({}, partitions=4)
    scheduler.load(world.topology.table.items())  # a restart that replays from offset 0
    replayed = scheduler.apply(e.cancel("t1"), PARTITION, 0)
    assert replayed.verdict.outcome == "duplicate"
    assert scheduler.queue(QUEUE).state.task("t1").state.value == "queued"


async def test_the_timer_assigns_a_scheduled_task_once_it_is_due(world: World) -> None:
    e = world.events
    await world.read(e.join("a1"))
    await world.read(e.submit("t1", not_before=world.clock.now + 1_000))
    assert world.outbox.appended == []
    assert await world.topology.processor.on_tick() == []
    world.clock.now += 1_000
    (assigned,) = await world.topology.processor.on_tick()
    assert assigned.task_id == "t1"


async def test_the_timer_expires_a_lease_once_and_waits_for_the_log(world: World) -> None:
    e = world.events
    await world.read(e.join("a1"))
    await world.read(e.submit("t1"))
    await world.read_back(list(world.outbox.appended))
    world.clock.now += 31_000  # past the 30 s lease, with no heartbeat from a1
    (expired,) = await world.topology.processor.on_tick()
    assert isinstance(expired, TaskLeaseExpired) and (expired.task_id, expired.attempt) == ("t1", 1)
    assert await world.topology.processor.on_tick() == []  # pending until read back
    outcome = await world.read(expired)
    assert outcome.ours and outcome.verdict.accepted


async def test_revoking_a_partition_forgets_its_queues_and_offsets(world: World) -> None:
    await world.read(world.events.join("a1"))
    mine = queue_partition(QUEUE, 4)
    world.scheduler.drop([(mine + 1) % 4])
    assert QUEUE in world.scheduler.queues
    world.scheduler.drop([mine])
    assert world.scheduler.queues == {} and world.scheduler.applied == {}
