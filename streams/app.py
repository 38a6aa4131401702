"""The write side as a faust app (ARCHITECTURE §5): the topology, built by one function.

`build()` wires the pieces and returns them; `create_app()` returns only the app. Tests
call the same function with a memory store and a recording outbox. The faust parts stay
thin: the agent hands each run of buffered records to `Processor.on_records`, the timer calls `on_tick`,
and the rebalance hooks drop the revoked queues and rebuild the owned ones from the
table once it is recovered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path

import weakref

import faust
import faust.streams as faust_streams
from aiokafka import TopicPartition

from streams import faustcompat, patches, sendguard
from streams.beat import Beat
from streams.heartbeats import HeartbeatBoard
from streams.pending import Pending
from streams.processor import CatchUp, Outbox, Processor
from streams.relay import Note, Relay, RelayBook
from streams.scheduler import Scheduler
from taskfold.broker import clients
from taskfold.broker.topics import TopicNames
from taskfold.core.edge import now_ms
from taskfold.core.events import Event
from taskfold.log import ConsumedRecord, LogReader
from taskfold.log.records import poison_record
from taskfold.core.scheduling.model import QueuePolicy
from taskfold.log.wire import encode_event

log = logging.getLogger(__name__)

TABLE = "rows"
RELAY_TABLE = "relay"
# A run: what faust has buffered, up to this many records or this long since the last run.
RUN_RECORDS = 500
RUN_WITHIN_S = 0.005


def relay_topic(topics: TopicNames) -> str:
    """The internal topic of the dependency relay's notes, keyed by dependency task id."""
    return f"{topics.prefix}scheduler-relay"


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker runs; every field has a default that suits one machine."""

    worker_id: str = "worker-1"
    state_dir: Path = Path(".taskfold")
    store: str = "rocksdb://"  # tests: "memory://"
    policy: QueuePolicy = QueuePolicy()
    policies: Mapping[str, QueuePolicy] = field(default_factory=dict)  # per queue, over `policy`
    tick_ms: int = 200
    pending_timeout_s: float = 10.0
    fast_rebalance: bool = False  # 2 s group sessions on Tansu (tests)
    read_heartbeats: bool = True
    fire_schedules: bool = True  # the beat of recurring schedules (streams/beat.py)
    report: Callable[[str], None] = log.info  # one line per lifecycle step (ready, revoked)

    def policy_for(self, queue: str) -> QueuePolicy:
        """The queue's policy."""
        return self.policies.get(queue, self.policy)


@dataclass
class Topology:
    """The app and the parts tests reach."""

    app: faust.App
    agent: faust.types.AgentT
    table: faust.types.TableT
    processor: Processor
    board: HeartbeatBoard
    relay_agent: faust.types.AgentT
    relay_table: faust.types.TableT
    relay: Relay


class FaustOutbox:
    """Appends through the app's producer (key = queue; `poison` keeps the original key)."""

    def __init__(self, app: faust.App, topics: TopicNames, partitions: int) -> None:
        self.events = _raw_topic(app, topics.events)
        self.poison = _raw_topic(app, topics.poison)
        self.notes = _raw_topic(app, relay_topic(topics), partitions=partitions, internal=True,
                                config=clients.changelog_configs())
        self.source = topics.events

    async def append(self, events: Sequence[Event]) -> None:
        """Hand events to the producer (not awaiting acks: a lost append is decided again).

        One event the producer refuses does not keep the others back; the first refusal
        is raised once all were handed over.
        """
        refused: list[Exception] = []
        for event in events:
            value, headers = encode_event(event)
            try:
                await self.events.send(key=event.queue.encode(), value=value, headers=headers)
            except Exception as exc:
                refused.append(exc)
        if refused:
            raise refused[0]

    async def relay(self, notes: Sequence[Note]) -> None:
        """Hand the dependency relay's notes to the producer, key = the dependency's task id."""
        for note in notes:
            await self.notes.send(key=note.dependency.encode(), value=note.encode())

    async def quarantine(self, record: ConsumedRecord, reason: str) -> None:
        """Copy an undecodable record to `poison`."""
        copy = poison_record(record.key, record.value, record.headers, reason=reason, topic=self.source,
                             position=record.position, quarantined_at=now_ms())
        await self.poison.send(key=_key_bytes(copy.key), value=copy.value, headers=copy.headers)


def _raw_topic(app: faust.App, name: str, **kwargs: object) -> faust.TopicT:
    # Bytes in, bytes out: decoding is ours (poison must never fail inside faust).
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", **kwargs)


def create_app(bootstrap: str, topics: TopicNames, *, tansu: bool, partitions: int,
               options: WorkerOptions = WorkerOptions()) -> faust.App:
    """The scheduler worker's faust app for this broker and these topics."""
    return build(bootstrap, topics, tansu=tansu, partitions=partitions, options=options).app


def build(
    bootstrap: str, topics: TopicNames, *, tansu: bool, partitions: int, options: WorkerOptions = WorkerOptions(),
    outbox: Outbox | None = None, catch_up: CatchUp | None = None, clock_ms: Callable[[], int] = now_ms,
    relay: Callable[[Sequence[Note]], Awaitable[None]] | None = None,
) -> Topology:
    """Wire app, tables, agents, timer, heartbeats and rebalance hooks; nothing starts yet.

    Tests that bring their own outbox bring the relay's note sender too, or go without one.
    """
    faustcompat.apply_fixes(tansu)
    patches.install()  # a faust bug, on every broker
    sendguard.install()  # a record too large for the producer must not crash the worker
    app_id = f"{topics.prefix}scheduler"  # the consumer group, and the changelog topics' prefix
    datadir = options.state_dir / "workers" / options.worker_id / app_id
    if not options.store.startswith("memory"):
        datadir.parent.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        app_id, broker=[f"kafka://{b.strip()}" for b in bootstrap.split(",")],
        store=options.store, datadir=str(datadir),
        topic_partitions=partitions, autodiscover=False,
        **faustcompat.faust_settings(tansu, fast=options.fast_rebalance),
        **clients.faust_cluster_settings(tansu=tansu, worker_id=options.worker_id, prefix=topics.prefix),
    )
    table = app.Table(TABLE, key_type=bytes, value_type=bytes, partitions=partitions,
                      extra_topic_configs=clients.changelog_configs(),
                      options={"driver": "rocksdict"} if options.store.startswith("rocksdb") else None)
    board = HeartbeatBoard()
    scheduler = Scheduler(table, partitions=partitions, policy=options.policy_for, heartbeats=board,
                          pending=Pending(options.pending_timeout_s), actor=f"scheduler:{options.worker_id}")
    catch_up = catch_up if catch_up is not None else _consumer_catch_up(app, topics.events)
    faust_outbox = FaustOutbox(app, topics, partitions)
    out = outbox or faust_outbox
    processor = Processor(scheduler, out, catch_up, clock_ms,
                          ready=board.ready.is_set if options.read_heartbeats else lambda: True,
                          backfill=_log_range(bootstrap, tansu, topics.events),
                          relay=relay if relay is not None or outbox is not None else faust_outbox.relay)
    events = _raw_topic(app, topics.events, partitions=partitions)

    async def schedule(stream: faust.StreamT) -> None:
        async for run in stream.take_events(RUN_RECORDS, within=RUN_WITHIN_S):
            for processed in await processor.on_records([_consumed(r) for r in run], _entering(run)):
                yield processed

    agent = app.agent(events, name="scheduler")(schedule)
    relay_agent, relay_table, relay_work = _relay(app, faust_outbox.notes, out, partitions, options, clock_ms,
                                                  _log_range(bootstrap, tansu, relay_topic(topics)))
    _hooks(app, table, processor, topics, options)
    if options.read_heartbeats:
        app.task(_heartbeats_reader(board, bootstrap, tansu, topics.heartbeats))
    if options.fire_schedules:
        app.task(Beat(bootstrap, topics, tansu=tansu, actor=f"beat:{options.worker_id}", clock_ms=clock_ms,
                      owned=lambda: _owned(app, topics.events), tick_ms=options.tick_ms).run)
    return Topology(app, agent, table, processor, board, relay_agent, relay_table, relay_work)


def _relay(app: faust.App, notes: faust.TopicT, out: Outbox, partitions: int, options: WorkerOptions,
           clock_ms: Callable[[], int], backfill: Callable) -> tuple[faust.types.AgentT, faust.types.TableT, Relay]:
    """The dependency relay's agent over the notes topic, and its table (co-partitioned with it)."""
    table = app.Table(RELAY_TABLE, key_type=bytes, value_type=bytes, partitions=partitions,
                      extra_topic_configs=clients.changelog_configs(),
                      options={"driver": "rocksdict"} if options.store.startswith("rocksdb") else None)
    relay = Relay(RelayBook(table, actor=f"relay:{options.worker_id}", clock_ms=clock_ms), out.append, backfill)

    async def carry(stream: faust.StreamT) -> None:
        async for record in stream.events():
            yield await relay.on_record(_consumed(record))

    return app.agent(notes, name="relay")(carry), table, relay


def _owned(app: faust.App, topic: str) -> set[int] | None:
    """The partitions of `topic` this worker's consumer holds now; None before it has any."""
    try:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}
    except (AttributeError, AssertionError, RuntimeError):
        return None


def _ms(seconds: float | None) -> int | None:
    """faust's record timestamp (seconds, from the broker's milliseconds) back in milliseconds."""
    return None if seconds is None else round(seconds * 1000)


def _entering(run: Sequence[faust.EventT]) -> Callable[[int], None]:
    """Makes record i of a run faust's current event, so its rows go to its changelog partition.

    take_events fills its buffer in another task, so the agent's task has no current
    event of its own; faust reads it from this context variable when a table row is set.
    """

    def entering(index: int) -> None:
        faust_streams._current_event.set(weakref.ref(run[index]))

    return entering


def _consumed(record: faust.EventT) -> ConsumedRecord:
    """A record a faust agent received, as the log's consumed record."""
    m = record.message
    # surrogateescape: a key that is not UTF-8 goes to `poison` with its bytes unchanged
    key = record.key.decode("utf-8", "surrogateescape") if record.key is not None else None
    return ConsumedRecord(m.topic, m.partition, m.offset, _ms(m.timestamp), key, record.value, tuple(m.headers or ()))


def _key_bytes(key: str | None) -> bytes | None:
    return key.encode("utf-8", "surrogateescape") if key else None


def _hooks(app: faust.App, table: faust.types.TableT, processor: Processor, topics: TopicNames,
           options: WorkerOptions) -> None:
    scheduler = processor.scheduler

    @app.on_partitions_revoked.connect
    async def drop_revoked(sender: object, revoked: set, **kwargs: object) -> None:
        mine = {tp.partition for tp in revoked if tp.topic == topics.events}
        scheduler.drop(mine)
        processor.catch_up.forget(mine)
        if mine:
            options.report(f"revoked partitions {sorted(mine)}")

    @app.on_partitions_assigned.connect
    async def note_assigned(sender: object, assigned: set, **kwargs: object) -> None:
        # The moment the group handed us partitions: faust's start and join end here, and
        # table recovery (then `ready`) begins; bench/restart.py times the two apart.
        mine = sorted(tp.partition for tp in assigned if tp.topic == topics.events)
        if mine:
            options.report(f"assigned partitions {mine}")

    async def rebuild() -> None:
        # After recovery the table holds exactly the rows of the partitions we now own.
        queues = scheduler.load(table.items())
        owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == topics.events)
        held = sum(len(q.state.tasks) for q in scheduler.queues.values())
        options.report(f"ready: partitions {owned}, {queues} queues, {scheduler.stored_tasks} tasks"
                       f" ({held} in memory)")

    table.on_recover(rebuild)

    @app.timer(options.tick_ms / 1000, name="scheduler-tick")
    async def tick(*_: object) -> None:
        await processor.on_tick()


def _log_range(bootstrap: str, tansu: bool, topic: str) -> Callable:
    """Reads records [start, end) of one partition straight from the log (the processor's backfill)."""

    async def read_range(partition: int, start: int, end: int) -> list[ConsumedRecord]:
        out: list[ConsumedRecord] = []
        async with LogReader(bootstrap, tansu=tansu) as reader:
            async with aclosing(reader.read(topic, [partition], start={partition: start})) as records:
                async for r in records:
                    if r.offset >= end:
                        break
                    out.append(r)
        return out

    return read_range


def _heartbeats_reader(board: HeartbeatBoard, bootstrap: str, tansu: bool, topic: str) -> Callable:
    async def read_heartbeats() -> None:
        while True:  # liveness must outlive a broker hiccup; the board keeps what it has
            try:
                async with LogReader(bootstrap, tansu=tansu) as reader:
                    await board.follow(reader, topic)
            except Exception:
                log.exception("reading %s failed; reading it again in 1 s", topic)
                await asyncio.sleep(1.0)

    return read_heartbeats


def _consumer_catch_up(app: faust.App, topic: str) -> CatchUp:
    """Catch-up read from the aiokafka consumer inside faust (its thread holds it)."""

    def state(partition: int):  # noqa: ANN202 - aiokafka's TopicPartitionState, or None
        # Private attributes: faust exposes no position, and the consumer lives in
        # faust's consumer thread. Anything missing (not started, mid-rebalance) is None.
        try:
            subscription = app.consumer._thread._consumer._subscription.subscription
            return subscription.assignment.state_value(TopicPartition(topic, partition))
        except (AttributeError, AssertionError):
            return None

    def highwater(partition: int) -> int | None:
        tp_state = state(partition)
        return tp_state.highwater if tp_state is not None else None

    def position(partition: int) -> int | None:
        tp_state = state(partition)
        return tp_state.position if tp_state is not None and tp_state.has_valid_position else None

    return CatchUp(highwater, position)
