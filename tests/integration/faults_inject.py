"""What the fault scenarios inject: load that keeps coming, zombie and early reports,
redelivered copies, undecodable records and schema-valid nonsense.

Each builder is plain data in, events or records out, except `Feeder` and `redeliver`,
which append while a scenario runs.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from schemas.codec import MAGIC, default_codec
from taskfold.core.reports import OUTCOME, STARTED, AttemptKey, report_id
from taskfold.core.events import Event, TaskAssigned, TaskCancelled, TaskCompleted, TaskFailed
from taskfold.core.fold import Ledger
from taskfold.log import RawRecord
from taskfold.log.eventlog import EventLog
from taskfold.core.telemetry import Heartbeat
from taskfold.core.testing import Events
from taskfold.log.wire import decode_event, encode_event, encode_record

from faults_support import FaultRun


def spread(run: FaultRun, queues: list[str], n: int, prefix: str, **options) -> list:
    """Submit n tasks round-robin over queues (one append per queue); awaitables for gather."""
    return [run.submit(q, n // len(queues) + (i < n % len(queues)), prefix=f"{prefix}-{q}", **options)
            for i, q in enumerate(queues)]


def current(ledger: Ledger, queue: str, key: tuple[str, str, int]) -> bool:
    """True while the agent still holds that attempt of the task."""
    agent, task_id, attempt = key
    task = ledger.state(queue).task(task_id)
    return task is not None and task.attempt == attempt and task.state.in_flight and task.agent_id == agent


def unreported(run: FaultRun, agents: list[str]) -> set[tuple[str, str, int]]:
    """(agent, task, attempt) the agents were given and never reported an outcome on."""
    given: set[tuple[str, str, int]] = set()
    for event, verdict in run.watcher.entries:
        if not verdict.accepted or getattr(event, "agent_id", None) not in agents:
            continue
        if isinstance(event, TaskAssigned):
            given.add((event.agent_id, event.task_id, event.attempt))
        elif isinstance(event, (TaskCompleted, TaskFailed, TaskCancelled)):
            given.discard((event.agent_id, event.task_id, event.attempt))
    return given


def late_reports(queue: str, keys: set[tuple[str, str, int]]) -> list[TaskCompleted]:
    """A zombie's TaskCompleted for each (agent, task, attempt), with ids derived as the agent would."""
    e = Events(queue=queue, seed="unused", now=int(time.time() * 1000))
    return [e.complete(task, agent, attempt, result='"zombie"').model_copy(
        update={"event_id": report_id(AttemptKey(queue, task, attempt), OUTCOME)})
        for agent, task, attempt in sorted(keys)]


class Feeder:
    """Keeps about `backlog` tasks open by submitting a wave whenever half of them ended."""

    def __init__(self, run: FaultRun, queues: list[str], backlog: int, deadline_s: float, **options) -> None:
        self.run, self.queues, self.backlog, self.deadline_s, self.options = run, queues, backlog, deadline_s, options
        self.submitted = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Feeder:
        self._task = asyncio.create_task(self._feed())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await self._task  # a wave being appended is finished, never cut

    def _outstanding(self) -> int:
        return self.submitted - self.run.terminal()

    async def _feed(self) -> None:
        stop, wave = asyncio.create_task(self._stop.wait()), 0
        try:
            while True:
                room = asyncio.create_task(self.run.until(
                    lambda _: self._outstanding() <= self.backlog // 2, self.deadline_s, "room for more load"))
                await asyncio.wait({room, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not room.done():
                    room.cancel()
                    await asyncio.gather(room, return_exceptions=True)
                    return
                room.result()
                n = self.backlog - self._outstanding()
                await asyncio.gather(*spread(self.run, self.queues, n, f"w{wave}", **self.options))
                self.submitted += n
                wave += 1
        finally:
            stop.cancel()


def early_reports(queue: str, task_ids: list[str], agent: str) -> list[Event]:
    """TaskStarted and TaskCompleted of attempt 1, with the ids the agent running it will derive."""
    e = Events(queue=queue, seed="unused", now=int(time.time() * 1000))
    out: list[Event] = []
    for task_id in task_ids:
        key = AttemptKey(queue, task_id, 1)
        out += [e.start(task_id, agent).model_copy(update={"event_id": report_id(key, STARTED)}),
                e.complete(task_id, agent).model_copy(update={"event_id": report_id(key, OUTCOME)})]
    return out


async def redeliver(run: FaultRun, other: EventLog, rng: random.Random, which: Callable[[Event], bool]) -> Counter:
    """Append, from the second producer, a shuffled copy of every accepted event chosen; count them."""
    chosen = [e for e, v in list(run.watcher.entries) if v.accepted and which(e)]
    rng.shuffle(chosen)
    await other.append(chosen)
    return Counter(e.event_id for e in chosen)


def garbage(keys: list[str], count: int, seed: int = 5) -> list[RawRecord]:
    """`count` undecodable records over these keys, cycling through nine kinds of garbage."""
    rng = random.Random(seed)
    e = Events(queue=keys[0], seed="garbage")
    good, _ = encode_event(e.submit("never-submitted"))
    joined = e.join("never-joined", slots=2).model_dump(mode="json")
    heartbeat, _ = encode_record(Heartbeat(agent_id="never-joined", queues=[], sent_at=1))
    kinds = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))),  # noise
        lambda: b"",  # an empty value
        lambda: None,  # a tombstone (no value at all)
        lambda: MAGIC + rng.randbytes(8) + b"body",  # a fingerprint no catalog knows
        lambda: good[: rng.randrange(11, len(good) - 1)],  # a truncated body
        lambda: good + b"\x00\x01",  # bytes after the record
        lambda: json.dumps({"type": "TaskSubmitted", "task_id": "json"}).encode(),  # the wrong encoding
        lambda: heartbeat,  # a telemetry record on the events topic
        lambda: default_codec().encode("AgentJoined", {**joined, "slots": -3}),  # Avro-valid, model-invalid
    ]
    records = []
    for i in range(count):
        value = kinds[i % len(kinds)]()
        if value is not None:
            try:
                decode_event(value)
            except Exception:  # noqa: BLE001 (PoisonMessage is what we want; anything else shows below)
                pass
            else:
                raise AssertionError(f"garbage kind {i % len(kinds)} decodes")
        records.append(RawRecord(key=keys[i % len(keys)], value=value))  # type: ignore[arg-type]
    return records


def poison_kind(reason: str) -> str:
    """A short name for a poison reason."""
    for marker, kind in (("marker bytes", "not single-object encoded"), ("shorter than", "too short"),
                         ("unknown writer schema", "unknown fingerprint"), ("cannot read body", "truncated body"),
                         ("left after the record", "trailing bytes"), ("no event class", "not an event"),
                         ("fails validation", "invalid record"), ("no value", "tombstone")):
        if marker in reason:
            return kind
    return reason


def nonsense(q: str, agents: list[str], holder: str) -> list[tuple[Event, str]]:
    """Schema-valid events the fold must reject, each with a part of the reason it must give."""
    e = Events(queue=q, seed=f"nonsense-{time.time_ns()}", now=int(time.time() * 1000))
    void = Events(queue="void", seed=f"void-{time.time_ns()}", now=int(time.time() * 1000))
    a, ghost = agents[0], "ghost-agent"
    return [
        (e.start("ghost-1", a), "unknown task ghost-1"),
        (e.complete("ghost-2", a), "unknown task ghost-2"),
        (e.fail("ghost-3", a), "unknown task ghost-3"),
        (e.cancel("ghost-4"), "unknown task ghost-4"),
        (e.assign("ghost-5", a), "unknown task ghost-5"),
        (e.resolved("ghost-6", "ghost-7"), "unknown task ghost-6"),
        (e.redrive("ghost-8"), "unknown task ghost-8"),
        (void.start("ghost-9", ghost), "unknown task ghost-9"),
        (e.complete("cycler", a, attempt=1), "stale attempt 1"),
        (e.fail("sleeper", holder, attempt=3), "stale attempt 3"),
        (e.complete("sleeper", ghost, attempt=1), f"agent {ghost} does not hold attempt 1"),
        (e.start("sleeper", ghost, attempt=1), f"agent {ghost} does not hold attempt 1"),
        (e.cancelled("sleeper", holder, attempt=1), "no cancel was requested"),
        (e.assign("sleeper", a, attempt=2), "is running: attempt 1 is held by"),
        (e.leave(ghost, reason="lost"), f"agent {ghost} has not joined queue {q}"),
        (void.leave(ghost), f"agent {ghost} has not joined queue void"),
        (e.submit("before-0"), "was already submitted"),
        (e.complete("before-1", a), "is already completed"),
        (e.cancel("before-2"), "is already completed"),
        (e.redrive("before-3"), "only dead-lettered tasks can be redriven"),
    ]


async def commit_offset(bootstrap: str, group: str, topic: str, partition: int, offset: int) -> None:
    """Commit `offset` for a consumer group on one partition, as if its members had processed up to it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])  # no group membership: a plain offset commit
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()
