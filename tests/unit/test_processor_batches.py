"""The worker's runs: rows written once per run (offset row last), one decide and one append per round.

A run is what the faust agent hands over at once. Its rows are held back and written
once each; a crash that loses any suffix of those writes must still converge on replay
(the same property as event by event, tests/unit/test_streams_rows.py).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.processor import Always, Processor
from streams.scheduler import Scheduler
from taskfold.broker.topics import queue_partition
from taskfold.core import foldrows, workingset
from taskfold.core.events import Event, TaskAssigned
from taskfold.core.testing import Events
from taskfold.log.records import ConsumedRecord
from taskfold.log.wire import encode_event
from tests.unit.test_streams_rows import POLICY, CrashingStore, events_from, reference, steps

HOME = queue_partition("q", 4)


class CountingStore(dict):
    """A row store that counts the writes of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: Counter = Counter()

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes[key] += 1
        super().__setitem__(key, value)


class Recorder:
    """An outbox that keeps each append call apart."""

    def __init__(self) -> None:
        self.calls: list[list[Event]] = []

    async def append(self, events: list[Event]) -> None:
        self.calls.append(list(events))

    async def quarantine(self, record: ConsumedRecord, reason: str) -> None:
        raise AssertionError(reason)


def records(events: list[Event], first: int = 0) -> list[ConsumedRecord]:
    """The events as the log gives them, from offset `first` of the queue's partition."""
    out = []
    for offset, event in enumerate(events, first):
        value, headers = encode_event(event)
        out.append(ConsumedRecord("events", HOME, offset, None, event.queue, value, tuple(headers)))
    return out


async def test_a_run_writes_each_changed_row_once_and_appends_its_decisions_in_one_call() -> None:
    e, store, outbox = Events(), CountingStore(), Recorder()
    processor = Processor(Scheduler(store, partitions=4), outbox, Always(), clock_ms=lambda: e.now)
    run = [e.join("a1", slots=2), e.join("a2", slots=2)] + [e.submit(f"t{i}") for i in range(4)]
    done = await processor.on_records(records(run))
    assert [p.verdict.outcome for p in done] == ["accepted"] * 6
    assert len(outbox.calls) == 1  # one produce for the round
    (decisions,) = outbox.calls
    assert sorted(d.task_id for d in decisions) == ["t0", "t1", "t2", "t3"]
    assert all(isinstance(d, TaskAssigned) for d in decisions)
    assert done[-1].appended == tuple(decisions)  # the round's decisions go with the queue's last record
    offset_row = foldrows.key("", foldrows.OFFSET, str(HOME))
    assert store.writes[offset_row] == 1 and max(store.writes.values()) == 1  # every row once per run
    assert processor.scheduler.applied[HOME] == 6
    rebuilt = Scheduler({}, partitions=4)
    rebuilt.load(store.items())
    assert rebuilt.queues == processor.scheduler.queues and rebuilt.applied == {HOME: 6}


async def test_a_task_row_changed_twice_in_a_run_ends_the_batch_before_the_second_change() -> None:
    e, store, outbox = Events(), CountingStore(), Recorder()
    processor = Processor(Scheduler(store, partitions=4), outbox, Always(), clock_ms=lambda: e.now)
    await processor.on_records(records([e.join("a1", slots=1), e.submit("t1")]))
    (assigned,) = outbox.calls[0]
    before = Counter(store.writes)
    run = [assigned, e.start("t1", "a1"), e.complete("t1", "a1")]
    await processor.on_records(records(run, first=2))
    task_row = foldrows.key("q", foldrows.TASK, "t1")
    offset_row = foldrows.key("", foldrows.OFFSET, str(HOME))
    # Three changes of one task row: three batches, each closed by its offset row.
    assert store.writes[task_row] - before[task_row] == 3
    assert store.writes[offset_row] - before[offset_row] == 3


async def test_a_rejected_event_is_covered_by_an_offset_row_before_any_later_row() -> None:
    e, store, outbox = Events(), CountingStore(), Recorder()
    processor = Processor(Scheduler(store, partitions=4), outbox, Always(), clock_ms=lambda: e.now)
    order: list[bytes] = []
    real = processor.scheduler.rows.write
    processor.scheduler.rows.write = lambda writes: (order.extend(k for k, _ in writes), real(writes))[1]
    done = await processor.on_records(records([e.cancel("t1"), e.submit("t1")]))
    assert [p.verdict.outcome for p in done] == ["rejected", "accepted"]
    offset_row = foldrows.key("", foldrows.OFFSET, str(HOME))
    assert order.index(offset_row) < order.index(foldrows.key("q", foldrows.TASK, "t1"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.lists(st.integers(1, 12), min_size=1, max_size=12), st.integers(0, 60), st.integers(0, 5))
def test_a_run_written_in_part_is_applied_again_after_a_crash(
    drawn: list[tuple], sizes: list[int], budget: int, back: int,
) -> None:
    """Runs of any size, any prefix of their writes, then a replay from at or before the stored offset, converge."""
    events = events_from(drawn)
    store = CrashingStore(budget)
    crashed = Scheduler(store, partitions=4, policy=lambda q: POLICY)
    offset, cuts = 0, iter(sizes * len(events))
    while offset < len(events):
        run = range(offset, min(len(events), offset + next(cuts)))
        crashed.rows.deferring = True
        for at in run:
            crashed.apply(events[at], HOME, at)
        crashed.flush()
        crashed.rows.deferring = False
        offset = run.stop
    restarted = Scheduler(dict(store.items()), partitions=4, policy=lambda q: POLICY)
    restarted.load(store.items())
    # At least once: the committed offset is at or before the offset the rows reflect
    # (a consumer that resumed past it is repaired by the backfill first).
    for at in range(max(0, restarted.applied.get(HOME, 0) - back), len(events)):
        restarted.apply(events[at], HOME, at)
    state, fleet = reference(events)
    # Finished tasks live in the rows, not in memory (taskfold.core.workingset).
    held = restarted.queue("q").state
    assert held == workingset.without(foldrows.slim_state(state), list(state.tasks))
    assert foldrows.read(restarted.store.items()).queues["q"].state() == foldrows.slim_state(state)
    if not store.dropped:
        assert restarted.queue("q").fleet == fleet
