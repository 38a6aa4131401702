"""The scheduler of the queues on a worker's partitions, without faust or Kafka.

Per owned queue it holds the fold (`QueueState`) and the scheduler's memory (`Fleet`),
persists every row an event changes into a row store (a faust Table in production, any
mutable mapping in tests), and asks the pure core (`taskfold.core.scheduling`) what to append.
The indexes the scheduler needs (pending by priority and arrival, delayed tasks by due
time, tasks in flight and load per agent, holders per concurrency key) are all derived
from that state by `decide` and `expirations`; nothing here duplicates them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass

from streams.pending import Pending
from streams.relay import Note, notes_of, notes_of_replay
from taskfold.core import foldrows, workingset
from taskfold.core.events import Event
from taskfold.broker.topics import queue_partition
from taskfold.core.fold.placement import Where
from taskfold.core.scheduling.decide import decide
from taskfold.core.scheduling.line import Line
from taskfold.core.scheduling.model import QueuePolicy
from taskfold.core.scheduling.timers import expirations
from taskfold.core.state import Task, Verdict, duplicate

RowStore = MutableMapping[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Applied:
    """What one event did: its verdict, whether it was one of ours read back, and the
    relay notes of the task rows it concerns."""

    verdict: Verdict
    ours: bool
    notes: tuple[Note, ...] = ()


class Scheduler:
    """Fold, remember, persist and decide, for the queues of the partitions this worker owns."""

    def __init__(
        self,
        store: RowStore,
        *,
        partitions: int,
        policy: Callable[[str], QueuePolicy] = lambda queue: QueuePolicy(),
        heartbeats: Mapping[str, int] | None = None,
        pending: Pending | None = None,
        actor: str = "scheduler",
        keep_finished: bool = False,
    ) -> None:
        self.store = store
        # Finished tasks leave memory once their rows are written and come back from the
        # store when an event names them (taskfold.core.workingset); True keeps them all.
        self.keep_finished = keep_finished
        self.partitions = partitions
        self.policy = policy
        self.heartbeats = heartbeats if heartbeats is not None else {}
        self.pending = pending or Pending()
        self.actor = actor
        self.queues: dict[str, foldrows.Queue] = {}
        self.lines: dict[str, Line] = {}  # queue -> its waiting index in order, kept in step by apply
        self.applied: dict[int, int] = {}  # partition -> next offset the rows do not reflect yet
        self.rows = RowBatch(store)  # rows held back until the end of a run (see RowBatch)
        self.stored_tasks = 0  # task rows the last load found, finished ones included

    def queue(self, name: str) -> foldrows.Queue:
        """The owned queue's state (empty when never seen)."""
        return self.queues.get(name, foldrows.Queue())

    def apply(self, event: Event, partition: int | None = None, offset: int | None = None,
              timestamp: int | None = None) -> Applied:
        """Fold one event read at (partition, offset), stamped `timestamp` by the broker; persist the rows it changed.

        A record below the stored offset is skipped: replayed after a crash, a rejected
        event would be judged on a later state (a cancel of a task submitted just after
        it would pass). Without a position (tests) nothing is skipped or stored, and the
        fold does not check where the event sits.
        """
        ours = self.pending.settle(event.event_id)
        if partition is not None and offset is not None and offset < self.applied.get(partition, 0):
            # The notes sent for it may have died with the worker that folded it: send them again.
            notes = tuple(notes_of_replay(self._recalled(event, replay=True)[0].state, event))
            return Applied(duplicate(f"offset {partition}:{offset} is already in the rows"), ours, notes)
        where = Where(partition, self.partitions, timestamp) if partition is not None else None
        # Slim: no changelog record of ours carries a payload or a result (see foldrows.slim).
        before, recalled = self._recalled(event)
        done = foldrows.slimmed(foldrows.step(before, event, self.policy(event.queue), where))
        verdict, writes = done.verdict, list(done.writes)
        if partition is not None and offset is not None:
            self.applied[partition] = offset + 1
            # Last, after the marking row: the rows say which offset they reflect, so a
            # worker that takes the partition over can tell whether its consumer skipped
            # records (see `missing`). A rejection leaves no other trace, and must not be
            # judged again.
            self.rows.add(partition, offset, writes, _state_keys(event.queue, done), verdict.accepted)
        else:
            self.rows.write(writes)
        if done.writes or event.queue in self.queues:  # a misrouted stray adds no queue we do not own
            changed = [*recalled, *(t.task_id for t in done.tasks)]
            self.queues[event.queue] = after = self._evicted(done.after, changed)
            if (line := self.lines.get(event.queue)) is not None:
                line.update(changed, after.state.waiting)
        return Applied(verdict, ours, tuple(notes_of(done.after.state, done.tasks, done.before.state)))

    def skip(self, partition: int, offset: int) -> None:
        """Record that the record at (partition, offset) was handled without folding (poison)."""
        self.applied[partition] = max(self.applied.get(partition, 0), offset + 1)
        self.rows.add(partition, offset, [], frozenset(), accepted=False)

    def missing(self, partition: int, offset: int) -> int | None:
        """The first offset the rows do not reflect, if the record at `offset` comes after a gap."""
        start = self.applied.get(partition, 0)
        return start if offset > start else None

    def flush(self) -> int | None:
        """Write the rows held back (the offset row last); returns their partition, if any."""
        return self.rows.flush()

    def decide(self, queue: str, now_ms: int) -> list[Event]:
        """The assignments to append for a queue now; they are pending from here on."""
        current = self.queue(queue)
        line = self.lines.get(queue)
        if line is None or not line.matches(current.state.waiting):
            line = self.lines[queue] = Line(current.state.waiting)
        decisions = decide(
            current.state, current.fleet, self.policy(queue), queue=queue, now_ms=now_ms,
            heartbeats=self.heartbeats, pending=self.pending.assignments(queue), actor=self.actor, line=line,
        )
        self.pending.add(decisions)
        return list(decisions)

    def expire(self, queue: str, now_ms: int) -> list[Event]:
        """Lease expiries, timeouts and lost agents due now, minus those already pending."""
        current = self.queue(queue)
        due = expirations(
            current.state, current.fleet, self.policy(queue), queue=queue, now_ms=now_ms,
            heartbeats=self.heartbeats, actor=self.actor,
        )
        fresh = self.pending.fresh(due)
        self.pending.add(fresh)
        return fresh

    def tick(self, now_ms: int, settled: Callable[[int], bool] = lambda partition: True) -> list[Event]:
        """What the clock decides for every owned queue whose partition is read up to its end."""
        out: list[Event] = []
        for name in sorted(self.queues):
            if settled(queue_partition(name, self.partitions)):
                # Expirations first: a lost agent's tasks go back, then decide places them
                # once they are read back (decide works on the folded state only).
                out += self.expire(name, now_ms)
                out += self.decide(name, now_ms)
        return out

    def _recalled(self, event: Event, replay: bool = False) -> tuple[foldrows.Queue, list[str]]:
        """The event's queue with the stored tasks the fold may read for it back in memory, and their ids.

        A replay gives the notes of every task the event settled (`notes_of_replay`), so it
        reads back the event's dependents too; the index of dependents is complete.
        """
        current = self.queue(event.queue)
        if self.keep_finished:
            return current, []
        state = current.state
        ids = workingset.wanted(state, event)
        if replay:
            ids = sorted({*ids, *(t for t in foldrows.affected_tasks(state, event) if t not in state.tasks)})
        back = [task for tid in ids if (task := self._stored_task(event.queue, tid)) is not None]
        if not back:
            return current, []
        return foldrows.Queue(workingset.recalled(state, back), current.fleet), [t.task_id for t in back]

    def _stored_task(self, queue: str, task_id: str) -> Task | None:
        """A task's row as the rows will have it: held back in this run, else stored (None if it never had one)."""
        raw = self.rows.get(foldrows.key(queue, foldrows.TASK, task_id))
        return None if raw is None else foldrows.decode(Task, raw)

    def _evicted(self, queue: foldrows.Queue, ids: list[str]) -> foldrows.Queue:
        """The queue without the finished tasks among `ids` (their rows are written or held in `rows`)."""
        if self.keep_finished:
            return queue
        state = workingset.without(queue.state, ids)
        return queue if state is queue.state else foldrows.Queue(state, queue.fleet)

    def load(self, items: Iterable[tuple[bytes, bytes]]) -> int:
        """Rebuild the owned queues from stored rows (after table recovery); returns the queue count.

        Finished tasks are not decoded: only their idempotency keys, arrivals and
        dependencies go into the indexes, and they are read back when an event names them.
        """
        stored = foldrows.read(items, keep_finished=self.keep_finished)
        self.stored_tasks = sum(len(q.tasks) + len(q.finished) for q in stored.queues.values())
        self.queues = {name: foldrows.Queue(q.state(), q.fleet()) for name, q in stored.queues.items()}
        self.lines = {}
        self.applied = dict(stored.offsets)
        return len(self.queues)

    def drop(self, partitions: Iterable[int] | None = None) -> None:
        """Forget the queues (and pending events) of revoked partitions (all when None)."""
        gone = set(partitions) if partitions is not None else None
        names = [q for q in self.queues if gone is None or queue_partition(q, self.partitions) in gone]
        for name in names:
            del self.queues[name]
            self.lines.pop(name, None)
        self.applied = {p: o for p, o in self.applied.items() if gone is not None and p not in gone}
        self.rows.discard(gone)
        self.pending.forget(names if gone is not None else None)


def _state_keys(queue: str, done: foldrows.Step) -> frozenset[bytes]:
    """The keys of the task and seat rows a step changed (the fold's rows, not the fleet's)."""
    keys = [foldrows.key(queue, foldrows.TASK, t.task_id) for t in done.tasks]
    keys += [foldrows.key(queue, foldrows.SEAT, m.agent_id) for m in done.seats]
    return frozenset(keys)


class RowBatch:
    """The rows of a run of events of one partition, written once each, the offset row last.

    A crash loses a suffix of the changelog, so what survives must be a state some replay
    from the surviving offset row turns into the right one. Per event that holds because
    its marking row comes last (foldrows.event_writes). Across events it holds while the
    events of a batch change disjoint task and seat rows: the survivors are then the rows
    of a prefix of the events plus part of one, and the replay from the batch's start
    takes the whole ones for duplicates and applies the rest, as it would per event. So
    a batch is written out (rows, then its offset row) before an event that:

    1. sits in another partition (its changelog partition is the event's partition);
    2. changes a task or seat row the batch already holds (a task assigned, then started);
    3. was not accepted: it leaves no row, only the offset row, which must land before any
       later row could make the replay judge it on a later state (a rejected cancel of a
       task submitted just after it would pass). Such an event is written out at once.

    Fleet rows (agent records, sessions, the cursor) are the scheduler's memory, not the
    fold's; a batch keeps the last value of each and writes it once.
    """

    def __init__(self, store: RowStore) -> None:
        self.store = store
        self.partition: int | None = None
        self.next: int | None = None  # the offset row's value once the batch is written
        self.pending: dict[bytes, bytes | None] = {}
        self.held: set[bytes] = set()  # task and seat rows of the batch
        self.deferring = False  # False: every event's rows are written at once (tests, replays)
        self.batches = 0  # batches written (each closed by one offset row)

    def add(self, partition: int, offset: int, writes: list[foldrows.Write], state_keys: frozenset[bytes],
            accepted: bool) -> None:
        """Take in one event's rows (marking row last) read at (partition, offset)."""
        if partition != self.partition or not accepted or not self.held.isdisjoint(state_keys):
            self.flush()
        self.partition, self.next = partition, offset
        for key, value in writes:
            self.pending[key] = value
        self.held |= state_keys
        if not accepted or not self.deferring:
            self.flush()

    def flush(self) -> int | None:
        """Write the batch's rows, then its offset row; returns the partition written."""
        if self.partition is None or self.next is None:
            return None
        partition, offset = self.partition, self.next
        self.write(list(self.pending.items()) + [foldrows.offset_write(partition, offset)])
        self.batches += 1
        self.pending.clear()
        self.held.clear()
        self.partition = self.next = None
        return partition

    def get(self, key: bytes) -> bytes | None:
        """A row as it stands once the batch is written: a task that finished earlier in the run
        has left memory before its row reached the store."""
        if key in self.pending:
            return self.pending[key]
        return self.store.get(key)

    def write(self, writes: Iterable[foldrows.Write]) -> None:
        """Write rows to the store now (None deletes)."""
        for key, value in writes:
            if value is None:
                self.store.pop(key, None)
            else:
                self.store[key] = value

    def discard(self, partitions: set[int] | None) -> None:
        """Drop a batch of a revoked partition (all when None): its records are read again."""
        if partitions is None or self.partition in partitions:
            self.pending.clear()
            self.held.clear()
            self.partition = self.next = None
