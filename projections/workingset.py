"""The projector's fold of every queue, and its `_fold` rows written once per batch.

`foldrows.step` encodes the rows an event touched at once; a batch of a rebuild touches a
task about four times (submit, assign, start, outcome), so the projector only notes which
rows changed (the row objects, last one wins) and encodes each once when the batch is
flushed. The rows written are the ones the per-event writes would have left.

With `keep_finished=False` (a rebuild) a task that is terminal when its batch is flushed
leaves memory: its row is in the store, and its idempotency key goes to table `_fold_keys`.
Before an event is folded, every task the fold may read for it (its own, a submit's
dependencies, a workflow's nodes, the owner of a submit's idempotency key) is read back
from the store, so each verdict and row is the same as with every task in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from projections.store import Store
from taskfold.core import foldrows, workingset
from taskfold.core.events import Event
from taskfold.core.fold import Where, evolve
from taskfold.core.scheduling.fleet import observe
from taskfold.core.scheduling.model import Fleet, QueuePolicy
from taskfold.core.state import Member, Task, Verdict

FOLD = "_fold"
FOLD_KEYS = "_fold_keys"  # queue NUL idempotency key -> id of a task that left memory
SEP = "\x00"


@dataclass(frozen=True, slots=True)
class Folded:
    """One event folded into its queue: the verdict, the queue before and after, the tasks it changed."""

    verdict: Verdict
    before: foldrows.Queue
    after: foldrows.Queue
    tasks: list[Task]


def _seat_changed(old: Member | None, new: Member) -> bool:
    # A seat's holdings are derived from the task rows, so only a join or leave writes it.
    return old is None or replace(old, holding=new.holding) != new


class WorkingSet:
    """Queues folded in memory; rows staged per batch; finished tasks optionally in the store only."""

    def __init__(self, store: Store, *, keep_finished: bool = True, keys_in_store: bool = False) -> None:
        self.store = store
        self.keep_finished = keep_finished
        # A rebuild moves the idempotency keys of finished tasks to table _fold_keys too (and
        # drops it at the end); a live projection keeps them in memory, as the scheduler does,
        # so its store stays row for row what a rebuild leaves.
        self.keys_in_store = keys_in_store
        stored = foldrows.read(store.raw_scan(FOLD), keep_finished=keep_finished)
        self.queues = {name: foldrows.Queue(q.state(), q.fleet()) for name, q in stored.queues.items()}
        self._rows: dict[bytes, Task | Member] = {}  # staged task and seat rows, last one wins
        self._fleets: dict[str, Fleet] = {}  # a queue's fleet when the batch began
        self._touched: dict[str, set[str]] = {}  # queue -> task ids to consider for leaving memory

    def queue(self, name: str) -> foldrows.Queue:
        """A queue's fold and fleet (empty if never seen)."""
        return self.queues.get(name, foldrows.Queue())

    def fold(self, event: Event, policy: QueuePolicy, where: Where | None) -> Folded:
        """Fold one event into its queue and stage the rows it changed."""
        name = event.queue
        before = self.queue(name)
        if not self.keep_finished:
            before = self._recall(before, event)
        state, verdict = evolve(before.state, event, where)
        fleet = observe(before.fleet, before.state, state, event, verdict, policy)
        after = foldrows.Queue(state, fleet)
        self.queues[name] = after
        tasks, seats = foldrows.touched(before.state, state, event)
        for task in tasks:
            self._rows[foldrows.key(name, foldrows.TASK, task.task_id)] = task
        for seat in seats:
            if _seat_changed(before.state.member(seat.agent_id), seat):
                self._rows[foldrows.key(name, foldrows.SEAT, seat.agent_id)] = seat
        if fleet is not before.fleet:
            self._fleets.setdefault(name, before.fleet)
        if not self.keep_finished and tasks:
            self._touched.setdefault(name, set()).update(t.task_id for t in tasks)
        return Folded(verdict, before, after, tasks)

    def flush(self, batch) -> None:
        """Write the staged rows into `batch` (encoded once each), then let finished tasks go."""
        for raw_key, row in self._rows.items():
            batch.raw(FOLD, raw_key, foldrows.encode(row))
        for name, start in self._fleets.items():
            for raw_key, value in foldrows.fleet_writes(name, start, self.queues[name].fleet):
                batch.raw(FOLD, raw_key, value)
        self._rows, self._fleets = {}, {}
        for name, ids in self._touched.items():
            self._forget(name, ids, batch)
        self._touched = {}

    def _forget(self, name: str, ids: set[str], batch) -> None:
        queue = self.queues[name]
        state = queue.state
        gone = [t for tid in ids if (t := state.tasks.get(tid)) is not None and t.state.terminal]
        if not gone:
            return
        tasks, keys = state.tasks.mutate(), state.idempotency.mutate()
        for task in gone:
            del tasks[task.task_id]
            key = task.idempotency_key
            if self.keys_in_store and key is not None and keys.get(key) == task.task_id:
                del keys[key]
                batch.raw(FOLD_KEYS, f"{name}{SEP}{key}".encode(), task.task_id.encode())
        state = replace(state, tasks=tasks.finish(), idempotency=keys.finish())
        self.queues[name] = foldrows.Queue(state, queue.fleet)

    def _recall(self, queue: foldrows.Queue, event: Event) -> foldrows.Queue:
        """The queue with every stored task the fold may read for `event` back in memory."""
        # The rule is the fold's, shared with the scheduler (taskfold.core.workingset). The
        # owner of a submit's key comes back whether the key is in memory or in _fold_keys:
        # the gateway answers a duplicate by key with that task, from `after` (writes.judge,
        # admission.conflict_after).
        missing = workingset.wanted(queue.state, event)
        owner = self.key_owner(event.queue, key) if (key := vars(event).get("idempotency_key")) else None
        if owner is not None and owner not in queue.state.tasks and owner not in missing:
            missing.append(owner)
        back = [t for tid in missing if (t := self._stored_task(event.queue, tid)) is not None]
        if not back:
            return queue
        self._touched.setdefault(event.queue, set()).update(t.task_id for t in back)
        return foldrows.Queue(workingset.recalled(queue.state, back), queue.fleet)

    def task(self, name: str, task_id: str) -> Task | None:
        """A task of a queue as the fold has it: in memory, else its stored row (None if never seen)."""
        task = self.queue(name).state.task(task_id)
        if task is None and not self.keep_finished:
            task = self._stored_task(name, task_id)
        return task

    def key_owner(self, name: str, key: str) -> str | None:
        """The id of the task that holds an idempotency key in a queue, in memory or stored."""
        owner = self.queue(name).state.idempotency.get(key)
        if owner is None and self.keys_in_store:
            owner = self._key_owner(name, key)
        return owner

    def _key_owner(self, name: str, key: str) -> str | None:
        owner = self.store.raw_get(FOLD_KEYS, f"{name}{SEP}{key}".encode())
        return None if owner is None else owner.decode()

    def _stored_task(self, name: str, task_id: str) -> Task | None:
        raw = self.store.raw_get(FOLD, foldrows.key(name, foldrows.TASK, task_id))
        return None if raw is None else foldrows.decode(Task, raw)

