"""The scheduler's working set: finished tasks leave memory, are read back when an event
names them, and every verdict, row, relay note and decision stays the one a scheduler
that kept every task gives, across restarts that load the rows without finished tasks.

The log is test_fold_equivalence's (two queues, every event type, races, redeliveries,
misrouted and skewed records, dependencies, workflows, reused idempotency keys).
"""

from __future__ import annotations

from collections.abc import Callable

from streams.scheduler import Scheduler
from taskfold.core import foldrows, workingset
from taskfold.core.events import Event
from taskfold.core.state import QueueState
from taskfold.core.testing import Events
from tests.unit.test_fold_equivalence import PARTITIONS, POLICIES, QUEUES, generated

BEATS_AT = 250  # records between comparisons of decisions and expirations


def scheduler(store: dict, keep_finished: bool) -> Scheduler:
    return Scheduler(store, partitions=PARTITIONS, policy=POLICIES.__getitem__, keep_finished=keep_finished)


def in_memory(state: QueueState) -> QueueState:
    """The state as a scheduler that lets finished tasks go holds it."""
    return workingset.without(state, list(state.tasks))


def run(restart_every: int | None, on: Callable[[int, Scheduler, Scheduler], None] = lambda n, a, b: None,
        run_of: int | None = None) -> None:
    """Fold the log into a keeping and a forgetting scheduler (restarted every `restart_every` records).

    With `run_of`, the forgetting one holds its rows back as the worker does for a run of
    records (streams.scheduler.RowBatch) and writes them every `run_of` records.
    """
    full, lean = scheduler({}, True), scheduler({}, False)
    lean.rows.deferring = run_of is not None
    offsets: dict[int, int] = {}
    for n, (event, where) in enumerate(generated()):
        if run_of and n % run_of == 0:
            lean.flush()
        if restart_every and n % restart_every == restart_every - 1:
            lean.flush()
            store = lean.store
            lean = scheduler(store, False)
            lean.load(list(store.items()))
        offset = offsets.get(where.partition, 0)
        offsets[where.partition] = offset + 1
        a = full.apply(event, where.partition, offset, where.timestamp)
        b = lean.apply(event, where.partition, offset, where.timestamp)
        assert (b.verdict, b.ours, b.notes) == (a.verdict, a.ours, a.notes), (n, event)
        on(n, full, lean)
    lean.flush()
    assert lean.store == full.store  # every row the same, finished tasks included
    for queue in QUEUES:
        assert lean.queue(queue).state == in_memory(full.queue(queue).state)
        assert lean.queue(queue).fleet == full.queue(queue).fleet


def same_decisions(n: int, full: Scheduler, lean: Scheduler) -> None:
    if n % BEATS_AT:
        return
    for queue in QUEUES:
        now = max(t.submitted_at for t in full.queue(queue).state.tasks.values()) if full.queue(queue).state.tasks else 0
        assert lean.expire(queue, now) == full.expire(queue, now)
        assert lean.decide(queue, now) == full.decide(queue, now)


def test_a_scheduler_without_finished_tasks_gives_every_verdict_row_and_note_of_one_with_all() -> None:
    run(None, same_decisions)


def test_tasks_that_left_memory_are_read_back_from_rows_a_run_still_holds() -> None:
    # A task finished early in a run leaves memory before its row reaches the store; a
    # later event of the same run that names it must read the held row, not the store's.
    run(None, same_decisions, run_of=13)
    run(211, run_of=50)


def test_restarts_that_load_only_unfinished_tasks_change_nothing() -> None:
    run(97)
    run(500)


def test_the_working_set_holds_no_finished_task_and_load_decodes_none() -> None:
    seen = {"finished": 0}

    def count(n: int, full: Scheduler, lean: Scheduler) -> None:
        for queue in QUEUES:
            tasks = lean.queue(queue).state.tasks.values()
            assert not [t for t in tasks if t.state.terminal and workingset.may_leave(lean.queue(queue).state, t)]
        seen["finished"] = sum(t.state.terminal for q in QUEUES for t in full.queue(q).state.tasks.values())

    run(None, count)
    assert seen["finished"] > 300  # the log finishes plenty of tasks


def test_a_restart_replays_notes_of_tasks_that_left_memory() -> None:
    """A record the rows reflect, read again after a crash, sends the notes it sent the first time."""
    e = Events(queue="q")
    events: list[Event] = [
        e.join("a", slots=1), e.submit("x"), e.submit("d", depends_on=["x"]),
        e.assign("x", "a"), e.start("x", "a"), e.fail("x", "a", retryable=False),  # x dead: d cancelled
    ]
    home = 0  # the only partition
    for keep in (True, False):
        store: dict = {}
        first = Scheduler(store, partitions=1, keep_finished=keep)
        sent = [first.apply(event, home, offset).notes for offset, event in enumerate(events)]
        again = Scheduler(store, partitions=1, keep_finished=keep)
        again.load(list(store.items()))
        assert "x" not in again.queue("q").state.tasks or keep
        replayed = again.apply(events[-1], home, len(events) - 1)
        assert replayed.verdict.outcome == "duplicate"
        assert set(replayed.notes) == set(sent[-1]), keep
        assert {n.dependency for n in sent[-1]} == {"x", "d"}
        assert again.queue("q").state.task("x") is None or keep


def test_a_finished_row_is_read_for_the_indexes_without_decoding() -> None:
    e = Events(queue="q")
    events: list[Event] = [e.join("a", slots=1), e.submit("t", idempotency_key='k "quoted"'), e.assign("t", "a"),
                           e.start("t", "a"), e.complete("t", "a"), e.submit("u", depends_on=["t"]), e.submit("v")]
    store: dict = {}
    lean = Scheduler(store, partitions=1)
    for event in events:
        lean.apply(event)
    rows = {foldrows.parse_key(k)[2]: v for k, v in store.items() if foldrows.parse_key(k)[1] == foldrows.TASK}
    assert workingset.finished_row(rows["v"]) is None  # queued: decoded whole
    assert workingset.finished_row(rows["t"]) == workingset.Finished(0, 'k "quoted"', ())
    again = Scheduler(store, partitions=1)
    again.load(list(store.items()))
    state = again.queue("q").state
    assert sorted(state.tasks) == ["u", "v"] and state.arrivals == 3
    assert dict(state.idempotency) == {'k "quoted"': "t"} and dict(state.dependents) == {"t": frozenset({"u"})}
