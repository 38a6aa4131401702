"""The central promise for any event sequence (ARCHITECTURE §9), without a broker: the
scheduler's rows, a projection built from offset 0 and a fresh fold agree.

The sequences are the projection properties' (two queues, four tasks, two agents, every
kind of event, times out of order, events delivered twice), laid out the way producers lay
them out: each queue's events in its home partition. tests/integration/test_central_promise.py
checks the same on a real broker's log.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from test_fold_properties import sequences
from test_projection_properties import EVENTS, Op, Records, ops

from projections.projector import FOLD, Projector
from projections.store import Store
from projections.verdicts import recorded_verdicts
from projections.views import all_views
from streams.scheduler import Scheduler
from taskfold.broker.topics import queue_partition
from taskfold.core import foldrows, workingset
from taskfold.core.events import Event
from taskfold.core.fold import Ledger
from taskfold.core.fold.placement import Where
from taskfold.log.eventlog import Recorded

PARTITIONS = 4


def placed(events: list[Event]) -> list[Recorded]:
    """The events as a log holds them: in their queue's home partition, stamped when they occurred."""
    next_offset: dict[int, int] = {}
    out = []
    for event in events:
        partition = queue_partition(event.queue, PARTITIONS)
        offset = next_offset.get(partition, 0)
        next_offset[partition] = offset + 1
        out.append(Recorded(event, partition, offset, event.occurred_at, PARTITIONS))
    return out


def check_the_promise(log: list[Recorded]) -> None:
    """Fresh fold, scheduler rows (read back by a restarted scheduler) and projection agree."""
    fresh, fresh_verdicts = Ledger(), {}
    table: dict[bytes, bytes] = {}
    scheduler, scheduler_verdicts = Scheduler(table, partitions=PARTITIONS), {}
    for r in log:
        fresh_verdicts[str(r.position)] = fresh.apply(r.event, Where(r.partition, PARTITIONS, r.timestamp)).outcome
        applied = scheduler.apply(r.event, r.partition, r.offset, r.timestamp)
        scheduler_verdicts[str(r.position)] = applied.verdict.outcome
    restarted = Scheduler({}, partitions=PARTITIONS)
    restarted.load(table.items())
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        try:
            projector = Projector(store, all_views())
            for start in range(0, len(log), 7):
                projector.apply(EVENTS, log[start:start + 7])
            projected = foldrows.read(store.raw_scan(FOLD)).queues
            recorded = recorded_verdicts(store)
        finally:
            store.close()
    assert scheduler_verdicts == fresh_verdicts
    assert {p: fresh_verdicts[p] for p in recorded} == recorded
    for queue, state in fresh.queues.items():
        if not state.tasks and not state.members:
            continue  # only rejected events: no rows anywhere
        # In memory without finished tasks (taskfold.core.workingset); in the rows, every task.
        assert restarted.queue(queue).state == workingset.without(foldrows.slim_state(state), list(state.tasks)), queue
        assert foldrows.read(table.items()).queues[queue].state() == foldrows.slim_state(state), queue
        assert projected[queue].state() == state, queue
        assert restarted.queue(queue).fleet == projected[queue].fleet(), queue


@settings(max_examples=50, deadline=None)
@given(ops=ops)
def test_scheduler_rows_projection_and_fold_agree_on_two_queues(ops: list[Op]) -> None:
    records = Records(ops, {"q0": 0, "q1": 0})  # its layout is replaced by the home partitions
    check_the_promise(placed([r.event for r in records.by_role[EVENTS]]))


@settings(max_examples=50, deadline=None)
@given(events=sequences)
def test_scheduler_rows_projection_and_fold_agree_on_the_fold_properties_sequences(events: list[Event]) -> None:
    check_the_promise(placed(events))
