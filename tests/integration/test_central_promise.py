"""The central promise (ARCHITECTURE §1, §9): on the same log, the scheduler's rows, a
projection rebuilt from offset 0 and a fresh `fold(log)` agree.

One log on a real broker, read three ways:

1. a fresh fold: every entry through the shared `Ledger`, at the position the reader gave;
2. the scheduler: the same records through `streams.scheduler.Scheduler` into a row table,
   then a second scheduler rebuilt from nothing but those rows (a worker after a restart),
   which holds the unfinished tasks in memory and reads finished ones from the rows
   (taskfold.core.workingset);
3. the projections: `projections.rebuild` into an empty store, then its fold rows, its
   task rows and the verdicts it recorded.

They must give the same task states, seats, fleets and verdicts, position by position.
"""

from __future__ import annotations

from pathlib import Path

from test_replay_matches_fold import QUEUES, workload

from projections import queries
from projections.projector import FOLD
from projections.rebuild import rebuild
from projections.store import Store
from projections.verdicts import recorded_verdicts
from projections.views import all_views
from streams.scheduler import Scheduler
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core import foldrows, workingset
from taskfold.core.events import Event
from taskfold.core.fold import Ledger, fold
from taskfold.core.state import TaskState
from taskfold.core.testing import Events
from taskfold.log.eventlog import EventLog, Poison
from taskfold.log.foldlog import fold_log


def with_fleet_changes(events: list[Event]) -> list[Event]:
    """The events, then per queue: an agent lost while it holds attempts, a new one that takes work."""
    ledger, _ = fold(events)
    late: list[Event] = []
    for queue in QUEUES:
        e = Events(queue=queue, seed=f"{queue}-late", now=max(ev.occurred_at for ev in events) + 1)
        late += [e.leave(f"{queue}-agent-1", "lost"), e.join(f"{queue}-agent-9", slots=2)]
        queued = sorted((t for t in ledger.state(queue).tasks.values() if t.state is TaskState.queued),
                        key=lambda t: t.task_id)[:2]
        agent = f"{queue}-agent-9"
        for task in queued:
            late += [e.assign(task.task_id, agent, task.attempt + 1), e.start(task.task_id, agent, task.attempt + 1)]
        if queued:
            late.append(e.complete(queued[0].task_id, agent, queued[0].attempt + 1))
    return events + late


async def test_scheduler_rows_a_projection_rebuild_and_a_fresh_fold_agree(
    broker: Broker, topics: TopicNames, tmp_path: Path,
) -> None:
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        await log.append(with_fleet_changes(workload(600, seed=23)))
        partitions = len(await log.reader.partitions(topics.events))
        fresh, fresh_verdicts = Ledger(), {}
        table: dict[bytes, bytes] = {}
        scheduler, scheduler_verdicts = Scheduler(table, partitions=partitions), {}
        async for entry in log.read():
            assert not isinstance(entry, Poison), entry
            fresh_verdicts[str(entry.position)] = fresh.apply(entry.event, entry.where).outcome
            applied = scheduler.apply(entry.event, entry.partition, entry.offset, entry.timestamp)
            scheduler_verdicts[str(entry.position)] = applied.verdict.outcome
        assert (await fold_log(log)).ledger.queues == fresh.queues  # the CLI's replay is this fold
    scheduler.flush()
    restarted = Scheduler({}, partitions=partitions)
    restarted.load(table.items())
    stored = foldrows.read(table.items()).queues
    await rebuild(broker.bootstrap, topics, tmp_path / "store", all_views(), tansu=broker.is_tansu)
    store = Store(tmp_path / "store", read_only=True)
    try:
        projected = foldrows.read(store.raw_scan(FOLD)).queues
        recorded = recorded_verdicts(store)
        task_rows = {(t.queue, t.task_id): queries.get_task(store, t.task_id, t.queue)
                     for state in fresh.queues.values() for t in state.tasks.values()}
    finally:
        store.close()

    assert scheduler_verdicts == fresh_verdicts
    assert {"accepted", "duplicate", "rejected"} <= set(fresh_verdicts.values())
    assert all(fresh.state(q).member(f"{q}-agent-9").holding for q in QUEUES)  # the late work was taken
    assert set(restarted.queues) == set(projected) == set(fresh.queues)
    for queue, state in fresh.queues.items():
        slim = foldrows.slim_state(state)  # the scheduler keeps no payloads
        assert stored[queue].state() == slim, queue  # every task's row, finished ones too
        assert restarted.queue(queue).state == workingset.without(slim, list(slim.tasks)), queue
        assert projected[queue].state() == state, queue
        assert restarted.queue(queue).fleet == projected[queue].fleet(), queue
    # The tasks view recorded one verdict per event it concerns, each the fresh fold's.
    assert recorded and {p: fresh_verdicts[p] for p in recorded} == recorded
    assert {key: row["state"] for key, row in task_rows.items()} == {
        (t.queue, t.task_id): t.state.value for state in fresh.queues.values() for t in state.tasks.values()}
