"""The Kafka transport: append events as a producer, and answer reads by folding the log.

It talks to the broker the way the CLI does (`taskfold.broker.connection`: an argument,
TASKFOLD_BOOTSTRAP, or the running `taskfold dev`) and folds the `events` topic with the
same `evolve` as everyone else, incrementally (`LogFold`): the first read folds each
partition it needs from offset 0, later reads only the tail.

A write:
1. Refuse before appending what the folded log already refuses (an unknown dependency,
   an idempotency key reused for a different request); the log is folded first only
   when the submit has dependencies or a key.
2. Append the events (one produce) and fold their partitions up to them.
3. Answer with the verdict the fold gave each event (`verdicts.judge`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing

from aiokafka.errors import KafkaError

from taskfold.broker.topics import TopicNames, queue_partition
from taskfold.core.edge import now_ms
from taskfold.core.requests import InvalidRequest, build
from taskfold.broker.connection import NoBroker, connect
from taskfold.core.events import Event, TaskCancelRequested, TaskRedriven, TaskSubmitted
from taskfold.log.eventlog import EventLog, entry_of
from taskfold.log.reader import LogReader
from taskfold.core.state import SCHEDULABLE
from taskfold.core.submits import request_differences, unknown_dependencies, unknown_reason
from taskfold.core.telemetry import Heartbeat
from taskfold.log.wire import PoisonMessage, decode_record
from taskfold.workflows.spec import WorkflowSpec, node_of

from taskfold.clients.errors import NotFound, Refused, TimedOut, Unavailable
from taskfold.clients.logfold import LogFold
from taskfold.clients.models import (AgentView, QueueView, Receipt, StreamItem, TaskView, WorkflowNodeReceipt,
                                     WorkflowReceipt, seat_of)
from taskfold.clients.verdicts import conflict, judge

Item = tuple[TaskSubmitted, bool]  # a submit, and whether the caller named its task id


class KafkaTransport:
    """Producer and fold of the log; one per client."""

    def __init__(self, bootstrap: str | None = None, *, topics: TopicNames | None = None,
                 tansu: bool | None = None) -> None:
        self._bootstrap, self._topics, self._tansu = bootstrap, topics, tansu
        self.log: EventLog | None = None
        self._beats: dict[str, Heartbeat] = {}
        self._beats_read_to: dict[int, int] = {}

    async def start(self) -> None:
        """Find the broker and connect; Unavailable naming why not."""
        try:
            target = await connect(self._bootstrap, self._topics, self._tansu)
        except NoBroker as exc:
            raise Unavailable(str(exc)) from None
        self.tansu = target.tansu
        self.log = EventLog(target.bootstrap, target.topics, tansu=target.tansu)
        try:
            await self.log.start()
        except (KafkaError, OSError) as exc:
            raise Unavailable(f"no broker answers at {target.bootstrap}: {exc}") from None
        self.fold = LogFold(self.log)

    async def close(self) -> None:
        """Flush and disconnect."""
        if self.log is not None:
            await self.log.stop()

    @property
    def topics(self) -> TopicNames:
        assert self.log is not None, "transport not started"
        return self.log.topics

    # writes

    async def submit(self, items: Sequence[Item]) -> list[Receipt | Refused]:
        """Steps 1 to 3 of the module docstring for a batch of submits."""
        events = [event for event, _ in items]
        if any((e.depends_on and not e.dependencies_may_follow) or e.idempotency_key for e in events):
            await self.fold.catch_up()
            _refuse_before_append(self.fold, items)
        receipts = await self._write(events)
        return [self._judged(event, given) for (event, given), _ in zip(items, receipts, strict=True)]

    async def submit_workflow(self, spec: WorkflowSpec, events: Sequence[TaskSubmitted]) -> WorkflowReceipt:
        """Append every node's submit in one batch (dependencies first) and answer each node's verdict."""
        outcomes = await self.submit([(event, True) for event in events])
        refused = next((o for o in outcomes if isinstance(o, Refused)), None)
        if refused is not None:
            raise refused
        return WorkflowReceipt(workflow_id=spec.workflow_id, nodes=[
            WorkflowNodeReceipt(node=node_of(e.task_id, e.correlation_id, e.idempotency_key) or e.task_id,
                                task_id=e.task_id, queue=e.queue, position=r.position, verdict=r.verdict,
                                reason=r.reason)
            for e, r in zip(events, outcomes, strict=True) if isinstance(r, Receipt)])

    async def cancel(self, task_id: str, queue: str | None, reason: str | None, actor: str | None) -> Receipt:
        """Append a TaskCancelRequested for the task and answer with its verdict."""
        name = await self._queue_of(task_id, queue)
        fields = {"actor": actor} if actor else {}
        event = _built(TaskCancelRequested, queue=name, task_id=task_id, reason=reason, **fields)
        await self._write([event])
        return _raised(self._judged(event))

    async def redrive(self, task_id: str, queue: str | None, extra_attempts: int, reason: str | None,
                      actor: str | None) -> Receipt:
        """Append a TaskRedriven for a dead-lettered task and answer with its verdict."""
        name = await self._queue_of(task_id, queue)
        fields = {"actor": actor} if actor else {}
        event = _built(TaskRedriven, queue=name, task_id=task_id, extra_attempts=extra_attempts, reason=reason,
                       **fields)
        await self._write([event])
        return _raised(self._judged(event))

    async def _write(self, events: Sequence[Event]) -> list[str]:
        """Append, then fold the written partitions up to the events; their positions."""
        assert self.log is not None, "transport not started"
        self.fold.await_events([e.event_id for e in events])
        try:
            positions = await self.log.append(list(events))
        except (KafkaError, OSError) as exc:
            raise Unavailable(f"the broker did not confirm the write ({type(exc).__name__}: {exc}); it may "
                              "not have been appended, and retrying with the same idempotency key is safe") from None
        until: dict[int, int] = {}
        for p in positions:
            until[p.partition] = max(until.get(p.partition, 0), p.offset + 1)
        await self.fold.catch_up(until)
        return [str(p) for p in positions]

    def _judged(self, event: Event, given: bool = False) -> Receipt | Refused:
        judged = self.fold.judged(event.event_id)
        if judged is None:  # folded to the event's offset, so this means the read stopped short
            raise Unavailable(f"event {event.event_id} was appended but its verdict could not be read back")
        request = None
        if isinstance(event, TaskSubmitted) and event.idempotency_key is not None:
            request = self.fold.keyed.get((event.queue, event.idempotency_key))
        return judge(self.fold.ledger.state(event.queue), event, str(judged.position), judged.verdict,
                     request=request, task_id_given=given)

    # reads

    async def get(self, task_id: str, queue: str | None) -> TaskView:
        """The task as the folded log has it now; NotFound if no queue holds it."""
        name = await self._queue_of(task_id, queue)
        task = self.fold.task(task_id, name)
        assert task is not None
        return TaskView.of_task(task)

    async def wait(self, task_id: str, queue: str | None, timeout: float | None) -> TaskView:
        """Fold the task's partition live until the task is terminal; TimedOut after `timeout` s."""
        name = await self._queue_of(task_id, queue)
        task = self.fold.task(task_id, name)
        if task is not None and task.state.terminal:
            return TaskView.of_task(task)
        assert self.log is not None
        topic = self.topics.events
        partition = queue_partition(name, len(await self.log.reader.partitions(topic)))
        reader = LogReader(self.log.reader.bootstrap, tansu=self.tansu)
        try:
            async with asyncio.timeout(timeout), reader:
                start = {partition: self.fold.read_to.get(partition, 0)}
                stream = reader.batches(topic, partitions=[partition], start=start, to_end=False, live=True)
                async with aclosing(stream) as batches:
                    async for batch in batches:
                        for record in batch:
                            self.fold.apply(entry_of(record))
                        task = self.fold.task(task_id, name)
                        if task is not None and task.state.terminal:
                            return TaskView.of_task(task)
        except TimeoutError:
            state = task.state.value if task is not None else "unknown"
            raise TimedOut(f"task {task_id} is still {state} after {timeout:g} s", task_id) from None
        raise Unavailable(f"the log stopped while waiting for task {task_id}")

    def stream(self, task_id: str, queue: str | None, after: str | None, follow: bool) -> AsyncIterator[StreamItem]:
        """The task's events (with verdicts) and progress chunks after the cursor (`kafkastream`)."""
        from taskfold.clients.kafkastream import task_stream

        return task_stream(self, task_id, queue, after, follow)

    async def queues(self) -> list[QueueView]:
        """Every queue in the log: tasks per state, waiting depth, its agents' slots and load."""
        await self.fold.catch_up()
        now = now_ms()
        out = []
        for name, state in sorted(self.fold.ledger.queues.items()):
            counts: dict[str, int] = {}
            for task in state.tasks.values():
                counts[task.state.value] = counts.get(task.state.value, 0) + 1
            waiting = [state.task(t) for t in state.waiting]
            oldest = min((t.submitted_at for t in waiting if t is not None and t.state in SCHEDULABLE), default=None)
            seats = [m for m in state.members.values() if m.active]
            out.append(QueueView(queue=name, states=counts, depth=len(state.waiting),
                                 oldest_waiting_age_ms=max(0, now - oldest) if oldest is not None else None,
                                 agents=len(seats), slots=sum(m.slots for m in seats),
                                 load=sum(len(m.holding) for m in seats)))
        return out

    async def agents(self) -> list[AgentView]:
        """Every agent that joined a queue or sent a heartbeat: seats per queue, last heartbeat."""
        await self.fold.catch_up()
        await self._read_heartbeats()
        seats: dict[str, list] = {agent_id: [] for agent_id in self._beats}
        for name, state in sorted(self.fold.ledger.queues.items()):
            for member in state.members.values():
                seats.setdefault(member.agent_id, []).append(seat_of(name, member))
        out = []
        for agent_id in sorted(seats):
            beat = self._beats.get(agent_id)
            out.append(AgentView(agent_id=agent_id, seats=seats[agent_id],
                                 last_heartbeat_at=beat.sent_at if beat else None,
                                 draining=beat.draining if beat else False))
        return out

    async def _read_heartbeats(self) -> None:
        assert self.log is not None
        reader = self.log.reader
        async with aclosing(reader.read(self.topics.heartbeats, start=dict(self._beats_read_to))) as records:
            async for record in records:
                self._beats_read_to[record.partition] = record.offset + 1
                try:
                    beat = decode_record(record.value or b"")
                except PoisonMessage:
                    continue  # a heartbeat is telemetry: a bad one is skipped, never fatal
                if isinstance(beat, Heartbeat):
                    self._beats[beat.agent_id] = beat

    async def _queue_of(self, task_id: str, queue: str | None) -> str:
        """The queue holding the task, after folding the log to its end; NotFound or Refused otherwise."""
        await self.fold.catch_up()
        return queue_of(self.fold, task_id, queue)


def queue_of(fold: LogFold, task_id: str, queue: str | None) -> str:
    """The queue that holds `task_id` (the one named, if given); NotFound, or Refused when ambiguous."""
    if queue is not None:
        if fold.task(task_id, queue) is None:
            raise NotFound(f"queue {queue} has no task {task_id}")
        return queue
    holders = fold.holders(task_id)
    if not holders:
        raise NotFound(f"no task {task_id}")
    if len(holders) > 1:
        reason = f"task id {task_id} exists in queues {', '.join(holders)}; name one"
        raise Refused(reason, [("queue", reason)])
    return holders[0]


def _refuse_before_append(fold: LogFold, items: Sequence[Item]) -> None:
    """Refused for unknown dependencies, Duplicate for a key reused differently; nothing is appended."""
    batch = {event.task_id for event, _ in items}

    def known(task_id: str) -> bool:
        return task_id in batch or bool(fold.holders(task_id))

    for event, given in items:
        if event.depends_on and not event.dependencies_may_follow:
            unknown = unknown_dependencies(event.depends_on, known)
            if unknown:
                reason = unknown_reason(unknown)
                raise Refused(f"depends_on: {reason}; nothing was appended", [("depends_on", reason)])
        key = event.idempotency_key
        state = fold.ledger.state(event.queue)
        original = state.task(state.idempotency[key]) if key is not None and key in state.idempotency else None
        if original is not None:
            differences = request_differences(event, fold.keyed.get((event.queue, key), original),
                                              task_id_given=given)
            if differences:
                raise conflict(key, original.task_id, differences)


def _built(event_class: type[Event], **fields: object) -> Event:
    """The event, or Refused naming the bad fields (nothing is appended)."""
    try:
        return build(event_class, **fields)
    except InvalidRequest as exc:
        raise Refused(f"not valid: {exc}; nothing was appended", exc.problems) from None


def _raised(outcome: Receipt | Refused) -> Receipt:
    if isinstance(outcome, Refused):
        raise outcome
    return outcome

