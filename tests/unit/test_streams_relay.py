"""The dependency relay without a broker: notes from folded records, the relay's table and
rule, and its faust agent in `test_context()` (streams/relay.py)."""

from __future__ import annotations

import pytest

from streams.app import WorkerOptions, build
from taskfold.log.records import ConsumedRecord
from streams.relay import Entry, Note, NoteFormatError, Relay, RelayBook, resolution_id
from streams.scheduler import Scheduler
from taskfold.broker.topics import queue_partition
from taskfold.broker.topics import TopicNames
from taskfold.core.events import DependencyResolved
from taskfold.core.fold import Ledger
from taskfold.core.state import TaskState
from taskfold.core.testing import Events

from tests.unit.test_streams_agent import Recorder


def _book() -> tuple[RelayBook, dict]:
    store: dict[bytes, bytes] = {}
    return RelayBook(store, actor="relay:test", clock_ms=lambda: 5_000), store


def _pairs(resolutions: list[DependencyResolved]) -> list[tuple]:
    return [(r.queue, r.task_id, r.dependency_id, r.outcome.value, r.dependency_state.value) for r in resolutions]


@pytest.mark.parametrize("outcome_first", [False, True])
def test_a_waiter_and_an_outcome_meet_whatever_comes_first(outcome_first: bool) -> None:
    book, _ = _book()
    waiting, outcome = Note("x", "reports", waiter="d"), Note("x", "emails", ended="completed")
    first, second = (outcome, waiting) if outcome_first else (waiting, outcome)
    assert book.take(first) == []
    (resolved,) = book.take(second)
    assert _pairs([resolved]) == [("reports", "d", "x", "satisfied", "completed")]
    assert resolved.event_id == resolution_id("x", "d") and resolved.actor == "relay:test"


@pytest.mark.parametrize(("ended", "outcome"), [("dead_lettered", "failed"), ("cancelled", "failed"),
                                                ("completed", "satisfied")])
def test_every_waiter_in_another_queue_hears_the_end(ended: str, outcome: str) -> None:
    book, _ = _book()
    book.take(Note("x", "a", waiter="d1"))
    book.take(Note("x", "b", waiter="d2"))
    book.take(Note("x", "p", waiter="same"))  # in x's own queue: the fold settles it there
    assert _pairs(book.take(Note("x", "p", ended=ended))) == [("a", "d1", "x", outcome, ended),
                                                             ("b", "d2", "x", outcome, ended)]


def test_a_repeated_note_resolves_with_the_same_event_id() -> None:
    # A note replayed after a crash must fold as a duplicate, never as a second resolution.
    book, store = _book()
    book.take(Note("x", "p", ended="completed"))
    first = book.take(Note("x", "q", waiter="d"))
    again = book.take(Note("x", "q", waiter="d"))
    repeat = book.take(Note("x", "p", ended="completed"))
    assert [r.event_id for r in first + again + repeat] == [resolution_id("x", "d")] * 3
    assert Entry.decode(store[b"dx"]) == Entry("p", "completed", {"d": "q"})


def test_notes_round_trip_and_bad_bytes_name_the_problem() -> None:
    for note in (Note("x", "q", waiter="d"), Note("x", "p", ended="cancelled")):
        assert Note.decode(note.encode()) == note
    for raw in (b"", b"{}", b'{"x":"x","q":"q"}', b'{"x":"x","q":"q","end":"exploded"}', None):
        with pytest.raises(NoteFormatError):
            Note.decode(raw)


def test_the_scheduler_notes_foreign_waiters_and_every_end() -> None:
    scheduler, p = Scheduler({}, partitions=4), queue_partition("reports", 4)
    e = Events(queue="reports")
    submitted = scheduler.apply(e.submit("d", depends_on=["x", "local"], dependencies_may_follow=True), p, 0)
    assert submitted.notes == (Note("local", "reports", waiter="d"), Note("x", "reports", waiter="d"))
    local = scheduler.apply(e.submit("local"), p, 1)
    assert local.notes == ()  # queued: not an end, not waiting
    cancelled = scheduler.apply(e.cancel("local"), p, 2)
    # local's end (for waiters elsewhere), and d, cancelled in turn by the fold, with its end
    assert cancelled.notes == (Note("d", "reports", ended="cancelled"), Note("local", "reports", ended="cancelled"))


def test_a_record_the_rows_already_reflect_gives_the_notes_of_the_current_rows() -> None:
    scheduler, p = Scheduler({}, partitions=4), queue_partition("reports", 4)
    e = Events(queue="reports")
    submit = e.submit("d", depends_on=["x"], dependencies_may_follow=True)
    scheduler.apply(submit, p, 0)
    replayed = scheduler.apply(submit, p, 0)  # the consumer resumed below the rows' offset
    assert replayed.verdict.outcome == "duplicate"
    assert replayed.notes == (Note("x", "reports", waiter="d"),)


def test_two_queues_and_the_relay_end_as_one_fold_would() -> None:
    """Schedulers of two queues, the relay between them, and the resolutions folded back."""
    emails, reports = Events(queue="emails", seed="e"), Events(queue="reports", seed="r")
    scheduler, (book, _), ledger = Scheduler({}, partitions=4), _book(), Ledger()
    log = [reports.submit("report", depends_on=["welcome"], dependencies_may_follow=True),
           reports.submit("summary", depends_on=["bounce"], dependencies_may_follow=True),
           reports.submit("anyway", depends_on=["bounce"], dependencies_may_follow=True,
                          on_dependency_failure="run"),
           emails.join("a1", slots=2), emails.submit("welcome"), emails.submit("bounce", max_attempts=1),
           emails.assign("welcome", "a1"), emails.complete("welcome", "a1"),
           emails.assign("bounce", "a1"), emails.fail("bounce", "a1", retryable=False)]
    offsets = {"emails": 0, "reports": 0}
    while log:
        event = log.pop(0)
        ledger.apply(event)
        applied = scheduler.apply(event, queue_partition(event.queue, 4), offsets[event.queue])
        offsets[event.queue] += 1
        for note in applied.notes:
            log += book.take(note)
    tasks = ledger.state("reports").tasks
    assert tasks["report"].state == TaskState.queued
    assert (tasks["summary"].state, tasks["summary"].reason) == (TaskState.cancelled,
                                                                 "dependency bounce was dead_lettered")
    assert tasks["anyway"].state == TaskState.queued


async def test_the_relay_agent_appends_the_resolution_through_the_outbox() -> None:
    outbox = Recorder()
    options = WorkerOptions(store="memory://", read_heartbeats=False)
    topology = build("127.0.0.1:1", TopicNames("unit."), tansu=False, partitions=4, options=options,
                     outbox=outbox, clock_ms=lambda: 7_000)
    async with topology.relay_agent.test_context() as relay:
        await relay.put(Note("x", "q", waiter="d").encode(), key=b"x", partition=1)
        await relay.put(b"not a note", key=b"x", partition=1)  # skipped, not fatal
        await relay.put(Note("x", "p", ended="completed").encode(), key=b"x", partition=1)
    (resolved,) = outbox.appended
    assert (resolved.queue, resolved.task_id, resolved.dependency_id, resolved.occurred_at) == ("q", "d", "x", 7_000)


def test_a_task_still_blocked_after_one_of_its_dependencies_resolved_sends_no_new_note() -> None:
    scheduler, p = Scheduler({}, partitions=4), queue_partition("reports", 4)
    e = Events(queue="reports")
    scheduler.apply(e.submit("d", depends_on=["x", "y"], dependencies_may_follow=True), p, 0)
    resolved = scheduler.apply(e.resolved("d", "x", "satisfied", dependency_state="completed"), p, 1)
    assert resolved.verdict.accepted and resolved.notes == ()


def test_a_replay_notes_only_what_the_replayed_event_did() -> None:
    scheduler, p = Scheduler({}, partitions=4), queue_partition("emails", 4)
    e = Events(queue="emails")
    log = [e.join("a1"), e.submit("x"), e.assign("x", "a1"), e.complete("x", "a1")]
    for offset, event in enumerate(log):
        scheduler.apply(event, p, offset)
    replayed = [scheduler.apply(event, p, offset).notes for offset, event in enumerate(log)]
    assert replayed == [(), (), (), (Note("x", "emails", ended="completed"),)]


async def test_notes_a_fetch_skipped_are_taken_from_the_log_before_the_next_one() -> None:
    # Tansu may answer a Fetch with later records and leave a batch out (BROKER.md): the
    # waiter note at offset 1 must not be lost, or d stays blocked for good.
    log = [Note("x", "p", ended="completed"), Note("x", "q", waiter="d"), Note("y", "q", waiter="e")]
    records = [ConsumedRecord("notes", 0, n, None, "x", note.encode(), ()) for n, note in enumerate(log)]
    asked: list[tuple[int, int, int]] = []

    async def backfill(partition: int, start: int, end: int) -> list[ConsumedRecord]:
        asked.append((partition, start, end))
        return records[start:end]

    appended: list = []

    async def append(events: list) -> None:
        appended.extend(events)

    book, store = _book()
    relay = Relay(book, append, backfill)
    await relay.on_record(records[0])
    await relay.on_record(records[2])  # offset 1 was skipped by the fetch
    assert asked == [(0, 1, 2)] and relay.counts["backfilled"] == 1
    assert _pairs(appended) == [("q", "d", "x", "satisfied", "completed")]
    assert book.next_offset(0) == 3
    # A restart that resumes past what the table reflects is repaired the same way.
    again = Relay(RelayBook(store, actor="relay:test", clock_ms=lambda: 6_000), append, backfill)
    await again.on_record(ConsumedRecord("notes", 0, 5, None, "z", Note("z", "p", ended="cancelled").encode(), ()))
    assert asked[-1] == (0, 3, 5)
