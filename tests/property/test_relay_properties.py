"""Hypothesis property of the dependency relay, without a broker: whatever the order in
which partitions are folded and notes delivered (late, repeated), and however often the
worker "crashes" (undelivered notes lost, partitions read again from a committed offset
while the rows stay ahead), every task ends as the dependency rules say, and no (task,
dependency) pair is resolved twice."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.relay import Note, RelayBook
from streams.scheduler import Scheduler
from taskfold.broker.topics import queue_partition
from taskfold.core.events import DependencyResolved, Event
from taskfold.core.fold import Ledger
from taskfold.core.state import TaskState
from taskfold.core.testing import Events

QUEUES = ["qa", "qb", "qc"]
FATES = ["completed", "dead_lettered", "cancelled"]


@dataclass
class Spec:
    """One task of a generated DAG: where it lives, what it waits on, how it ends if it runs."""

    task_id: str
    queue: str
    depends_on: list[str]
    fate: str
    runs_anyway: bool


specs = st.lists(
    st.tuples(st.sampled_from(QUEUES), st.sets(st.integers(0, 7), max_size=2), st.sampled_from(FATES), st.booleans()),
    min_size=2, max_size=8,
).map(lambda rows: [Spec(f"t{n}", q, sorted(f"t{d}" for d in deps if d < n), fate, run)
                    for n, (q, deps, fate, run) in enumerate(rows)])


def expected_states(tasks: list[Spec]) -> dict[str, str]:
    """The end of every task by the rules, in dependency (index) order."""
    ends: dict[str, str] = {}
    for spec in tasks:
        failed = any(ends[d] != "completed" for d in spec.depends_on)
        ends[spec.task_id] = "cancelled" if failed and not spec.runs_anyway else spec.fate
    return ends


@dataclass
class World:
    """Per-partition logs, one scheduler, the relay's book, and a reference fold of the logs."""

    events: dict[str, Events]
    fates: dict[str, str]
    scheduler: Scheduler = field(default_factory=lambda: Scheduler({}, partitions=4))
    book: RelayBook = field(default_factory=lambda: RelayBook({}, actor="relay", clock_ms=lambda: 9_000))
    ledger: Ledger = field(default_factory=Ledger)
    logs: dict[int, list[Event]] = field(default_factory=dict)
    read: Counter = field(default_factory=Counter)  # partition -> the consumer's position
    folded: Counter = field(default_factory=Counter)  # partition -> records the reference fold has seen
    notes: list[tuple[Note, int, int]] = field(default_factory=list)  # not yet delivered, with their record
    accepted: Counter = field(default_factory=Counter)
    acted: set[str] = field(default_factory=set)  # tasks the agents already ran (or cancelled)

    def append(self, events: list[Event]) -> None:
        for event in events:
            self.logs.setdefault(queue_partition(event.queue, 4), []).append(event)

    def fold_next(self, partition: int) -> None:
        offset = self.read[partition]
        event = self.logs[partition][offset]
        self.read[partition] += 1
        if offset == self.folded[partition]:
            self.folded[partition] += 1
            verdict = self.ledger.apply(event)
            if isinstance(event, DependencyResolved) and verdict.accepted:
                self.accepted[(event.task_id, event.dependency_id)] += 1
        # Below the rows' offset (after a crash) the scheduler sends the notes of its rows again.
        self.notes += [(n, partition, offset) for n in self.scheduler.apply(event, partition, offset).notes]

    def crash(self, rewind: int) -> None:
        """SIGKILL: notes not yet delivered are lost, and each partition is read again from
        an offset at or before the first record whose notes were lost (the producer is
        flushed before an offset is committed); the rows stay as they were."""
        for partition in list(self.read):
            lost = [offset for _, p, offset in self.notes if p == partition]
            safe = min(lost, default=self.read[partition])
            self.read[partition] = max(0, safe - rewind)
        self.notes.clear()

    def run_agents(self) -> None:
        """Every queued task meets its fate (the agents' reports, appended to the log)."""
        for queue, e in self.events.items():
            for task in self.scheduler.queue(queue).state.tasks.values():
                if task.state == TaskState.queued and task.task_id not in self.acted:
                    self.acted.add(task.task_id)
                    self.append(self.fate_events(e, task.task_id))

    def fate_events(self, e: Events, task_id: str) -> list[Event]:
        fate = self.fates[task_id]
        if fate == "cancelled":
            return [e.cancel(task_id)]
        end = e.complete(task_id, "a1") if fate == "completed" else e.fail(task_id, "a1", retryable=False)
        return [e.assign(task_id, "a1"), end]

    def pending(self) -> list[int]:
        return [p for p, log in sorted(self.logs.items()) if self.read[p] < len(log)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs, st.data())
def test_every_order_of_folds_notes_and_crashes_ends_by_the_rules(tasks: list[Spec], data: st.DataObject) -> None:
    events = {q: Events(queue=q, seed=q) for q in QUEUES}
    world = World(events, {s.task_id: s.fate for s in tasks})
    world.append([events[q].join("a1", slots=100) for q in QUEUES])
    submits = [events[s.queue].submit(s.task_id, depends_on=s.depends_on, max_attempts=1,
                                      dependencies_may_follow=True,
                                      on_dependency_failure="run" if s.runs_anyway else "cancel") for s in tasks]
    world.append(data.draw(st.permutations(submits)))
    for _ in range(data.draw(st.integers(0, 300))):
        move = data.draw(st.sampled_from(["fold", "fold", "note", "note", "repeat", "crash", "agents"]))
        if move == "fold" and world.pending():
            world.fold_next(data.draw(st.sampled_from(world.pending())))
        elif move in ("note", "repeat") and world.notes:
            index = data.draw(st.integers(0, len(world.notes) - 1))
            note, _, _ = world.notes[index] if move == "repeat" else world.notes.pop(index)
            world.append(world.book.take(note))
        elif move == "crash":
            world.crash(data.draw(st.integers(0, 3)))
        elif move == "agents":
            world.run_agents()
    world.run_agents()
    while world.pending() or world.notes:  # then let everything settle, in order
        for partition in world.pending():
            world.fold_next(partition)
        while world.notes:
            world.append(world.book.take(world.notes.pop(0)[0]))
        world.run_agents()
    ends = {s.task_id: world.ledger.state(s.queue).task(s.task_id).state.value for s in tasks}
    assert ends == expected_states(tasks)
    assert all(n == 1 for n in world.accepted.values()), world.accepted
