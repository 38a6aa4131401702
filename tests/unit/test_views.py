"""The projection views over event sequences, read back through `projections.queries`:
task rows, timings and history, lists and cursors, sessions, dead letters, rejections and
the time index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from projections import queries
from projections.projector import Projector
from projections.store import Store
from projections.views import all_views
from projections.views.viewrows import event_json, fold_part, task_json
from projections.views.tasks import event_bytes
from taskfold.core.events import Event
from taskfold.core.fold import fold
from taskfold.log.eventlog import Cut, CutRule, Recorded
from taskfold.log.records import ConsumedRecord
from taskfold.core.testing import Events


class Log:
    """A store fed through a Projector with every view; each queue is on its own partition."""

    def __init__(self, path: Path, partitions: dict[str, int] | None = None) -> None:
        self.store = Store(path)
        self.projector = Projector(self.store, all_views())
        self.partitions = partitions or {}
        self.next: dict[int, int] = {}
        self.placed: list[Recorded] = []

    def apply(self, *events: Event) -> list[Recorded]:
        records = []
        for event in events:
            p = self.partitions.setdefault(event.queue, len(self.partitions))
            records.append(Recorded(event, p, self.next.get(p, 0), event.occurred_at))
            self.next[p] = self.next.get(p, 0) + 1
        self.projector.apply("events", records)
        self.placed += records
        return records


@pytest.fixture
def log(tmp_path: Path):
    lg = Log(tmp_path / "store")
    yield lg
    lg.store.close()


def test_a_task_row_holds_the_fold_fields_and_its_timings(log: Log) -> None:
    e = Events(queue="emails", now=10_000)
    log.apply(e.join("a1", slots=2, labels={"region": "eu"}),
              e.submit("t1", at=10_100, payload='{"to": "ada"}', session_id="s1", labels={"region": "eu"},
                       priority="high"),
              e.assign("t1", "a1", at=10_350), e.start("t1", "a1", at=10_400),
              e.complete("t1", "a1", result='{"ok": true}', at=12_400))
    row = queries.get_task(log.store, "t1")
    ledger, _ = fold(r.event for r in log.placed)
    assert fold_part(row) == task_json(ledger.state("emails").task("t1"))
    assert (row["state"], row["priority"], row["payload"], row["result"]) == ("completed", "high", '{"to": "ada"}',
                                                                              '{"ok": true}')
    assert row["labels"] == {"region": "eu"} and row["session_id"] == "s1" and row["agent_id"] == "a1"
    assert row["timings"] == {"submitted_at": 10_100, "queued_at": 10_100, "ready_at": None,
                              "first_assigned_at": 10_350, "first_started_at": 10_400, "finished_at": 12_400,
                              "queue_wait_ms": 250, "run_time_ms": 2_000, "attempts": 1}
    assert row["position"] == "0:4" and row["updated_at"] == 12_400
    assert row["chunks"] == {"chunks": 0, "by_attempt": {}, "last_position": None}
    assert queries.get_task(log.store, "nope") is None


def test_retries_add_up_waits_from_when_the_task_was_due_and_runs_per_attempt(log: Log) -> None:
    e = Events(queue="q", now=0)
    log.apply(e.join("a1"), e.submit("t", at=1_000, backoff={"initial_ms": 500, "jitter": 0.0}),
              e.assign("t", "a1", at=1_100), e.fail("t", "a1", at=1_400))
    waiting = queries.get_task(log.store, "t")
    assert waiting["state"] == "retry_wait" and waiting["due_at"] == 1_900
    assert waiting["timings"]["ready_at"] == 1_900
    log.apply(e.assign("t", "a1", attempt=2, at=2_000), e.start("t", "a1", attempt=2, at=2_050),
              e.complete("t", "a1", attempt=2, at=2_550))
    timings = queries.get_task(log.store, "t")["timings"]
    assert timings["queue_wait_ms"] == 100 + 100  # 1000->1100, then due at 1900 -> 2000
    assert timings["run_time_ms"] == 300 + 500  # assigned 1100 -> failed 1400 (never started), 2050 -> 2550
    assert timings["attempts"] == 2 and timings["first_assigned_at"] == 1_100 and timings["queued_at"] == 1_000


def test_history_has_every_event_about_a_task_with_its_verdict_and_the_task_after_it(log: Log) -> None:
    e = Events(queue="q", now=0)
    submit = e.submit("t", at=10)
    log.apply(e.join("a1"), submit, e.assign("t", "a1", at=20), e.complete("t", "a1", attempt=2, at=25),
              submit, e.complete("t", "a1", at=30))
    rows = queries.task_history(log.store, "t")
    assert [(r["position"], r["event"]["type"], r["verdict"]["outcome"], r["task"]["state"]) for r in rows] == [
        ("0:1", "TaskSubmitted", "accepted", "queued"), ("0:2", "TaskAssigned", "accepted", "assigned"),
        ("0:3", "TaskCompleted", "rejected", "assigned"), ("0:4", "TaskSubmitted", "duplicate", "assigned"),
        ("0:5", "TaskCompleted", "accepted", "completed")]
    assert rows[2]["verdict"]["reason"].startswith("stale attempt 2")
    assert rows[0]["event"] == event_json(submit) and (rows[0]["partition"], rows[0]["offset"]) == (0, 1)
    assert rows[2]["task"] == rows[1]["task"]  # a rejected event leaves the row as it was
    assert [r["position"] for r in queries.task_history(log.store, "t", after="0:3")] == ["0:4", "0:5"]
    assert queries.task_history(log.store, "t", after="0:3", limit=1)[0]["position"] == "0:4"


def test_history_records_what_other_events_did_to_a_task(log: Log) -> None:
    e = Events(queue="q", now=0)
    log.apply(e.join("a1"), e.submit("first"), e.submit("after", depends_on=["first"]),
              e.assign("first", "a1"), e.complete("first", "a1"), e.assign("after", "a1"), e.leave("a1", "lost"))
    rows = queries.task_history(log.store, "after")
    assert [(r["event"]["type"], r["event"].get("task_id"), r["task"]["state"]) for r in rows] == [
        ("TaskSubmitted", "after", "blocked"), ("TaskCompleted", "first", "queued"),
        ("TaskAssigned", "after", "assigned"), ("AgentLeft", None, "queued")]


def test_events_about_unknown_tasks_have_history_without_a_task(log: Log) -> None:
    e = Events(queue="q", now=0)
    log.apply(e.submit("t1", idempotency_key="k"), e.submit("t2", idempotency_key="k"), e.start("ghost", "a9"))
    (dup,) = queries.task_history(log.store, "t2")
    assert dup["verdict"] == {"outcome": "duplicate", "ref": "t1",
                              "reason": "idempotency key 'k' was already used by task t1"}
    assert dup["task"] is None and queries.get_task(log.store, "t2") is None
    (ghost,) = queries.task_history(log.store, "ghost")
    assert ghost["verdict"]["outcome"] == "rejected" and ghost["task"] is None


def test_queue_events_list_every_event_of_a_queue_and_resume_after_a_position(log: Log) -> None:
    e, other = Events(queue="q", now=0), Events(queue="other", now=0, seed="o")
    log.apply(e.join("a1"), e.submit("t"), other.submit("x"), e.assign("t", "a1"), e.start("nope", "a1"))
    rows = list(queries.queue_events(log.store, "q"))
    assert [(r["position"], r["event"]["type"]) for r in rows] == [
        ("0:0", "AgentJoined"), ("0:1", "TaskSubmitted"), ("0:2", "TaskAssigned"), ("0:3", "TaskStarted")]
    assert rows[0]["verdict"]["outcome"] == "accepted" and "task" not in rows[0]
    assert rows[2]["task"]["state"] == "assigned"
    assert [r["position"] for r in queries.queue_events(log.store, "q", after="0:1")] == ["0:2", "0:3"]
    assert [r["event"]["task_id"] for r in queries.queue_events(log.store, "other")] == ["x"]


def test_a_long_queue_stream_is_read_page_by_page(log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "PAGE", 3)
    e = Events(queue="q", now=0)
    log.apply(*[e.submit(f"t{i}") for i in range(8)])
    assert [r["event"]["task_id"] for r in queries.queue_events(log.store, "q")] == [f"t{i}" for i in range(8)]


def _pages(call, **filters) -> list[list[str]]:  # noqa: ANN001
    pages, cursor = [], None
    while True:
        rows, cursor = call(cursor=cursor, **filters)
        pages.append([r["task_id"] for r in rows])
        if cursor is None:
            return pages


def test_tasks_are_listed_by_queue_state_session_and_correlation_a_page_at_a_time(log: Log) -> None:
    e, o = Events(queue="q", now=0), Events(queue="other", now=100, seed="o")  # x is submitted last
    log.apply(e.join("a1", slots=5), *[e.submit(f"t{i}", session_id="s" if i % 2 else None,
                                                 correlation_id="c" if i < 3 else None) for i in range(7)],
              o.submit("x", session_id="s"), e.assign("t1", "a1"), e.assign("t4", "a1"))
    store = log.store
    assert _pages(lambda **kw: queries.list_tasks(store, **kw), queue="q", limit=3) == [
        ["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
    assert _pages(lambda **kw: queries.list_tasks(store, **kw), queue="q", state="queued", limit=2) == [
        ["t0", "t2"], ["t3", "t5"], ["t6"]]
    assert _pages(lambda **kw: queries.list_tasks(store, **kw), state="assigned", limit=5) == [["t1", "t4"]]
    assert _pages(lambda **kw: queries.list_tasks(store, **kw), session_id="s", limit=10) == [
        ["t1", "t3", "t5", "x"]]
    assert _pages(lambda **kw: queries.list_tasks(store, **kw), session_id="s", queue="q", state="queued",
                  limit=10) == [["t3", "t5"]]
    assert _pages(lambda **kw: queries.list_tasks(store, **kw), correlation_id="c", limit=10) == [["t0", "t1", "t2"]]
    assert sum(_pages(lambda **kw: queries.list_tasks(store, **kw), limit=4), []) == [
        "t0", "t1", "t2", "t3", "t4", "t5", "t6", "x"]
    _, cursor = queries.list_tasks(store, queue="q", limit=1)
    with pytest.raises(queries.BadCursor):
        queries.list_tasks(store, state="queued", cursor=cursor)
    with pytest.raises(queries.BadCursor):
        queries.list_tasks(store, cursor="not-a-cursor")
    with pytest.raises(ValueError):
        queries.list_tasks(store, state="urgent")


def test_dead_letters_appear_when_attempts_run_out_and_go_on_redrive(log: Log) -> None:
    e = Events(queue="q", now=0)
    log.apply(e.join("a1"), e.submit("t", max_attempts=1), e.submit("u", max_attempts=1),
              e.assign("t", "a1", at=100), e.fail("t", "a1", error="disk full", at=150),
              e.assign("u", "a1", at=200), e.fail("u", "a1", retryable=False, at=250))
    rows, cursor = queries.dead_letters(log.store)
    assert cursor is None and [r["task_id"] for r in rows] == ["t", "u"]
    assert rows[0] == {"task_id": "t", "queue": "q", "task_type": "echo", "priority": "medium",
                       "reason": "attempts exhausted (1 of 1): disk full", "error": "disk full", "attempts": 1,
                       "lost_attempts": 0, "max_attempts": 1, "agent_id": "a1", "dead_lettered_at": 150, "position": "0:4"}
    log.apply(e.redrive("t"))
    assert [r["task_id"] for r in queries.dead_letters(log.store)[0]] == ["u"]
    assert queries.dead_letters(log.store, queue="elsewhere") == ([], None)


def test_a_dead_letter_by_lost_holders_shows_its_attempts_were_lost_not_charged(log: Log) -> None:
    e = Events(queue="q", now=0)
    log.apply(e.join("a1"), e.submit("t", max_attempts=1))
    for attempt in (1, 2, 3):
        log.apply(e.assign("t", "a1", attempt=attempt), e.expire("t", "a1", attempt=attempt))
    [row], _ = queries.dead_letters(log.store)
    assert (row["attempts"], row["lost_attempts"], row["max_attempts"]) == (3, 3, 1)
    assert row["reason"].startswith("lost 3 holders in a row (a1, a1, a1)")
    assert queries.get_task(log.store, "t", queue="q")["lost_attempts"] == 3


def test_every_rejection_is_kept_with_its_reason_in_log_order(log: Log) -> None:
    e = Events(queue="q", now=0)
    log.apply(e.submit("t"), e.assign("t", "nobody", at=50), e.start("t", "nobody", at=60), e.submit("t", at=70))
    rows, cursor = queries.rejections(log.store, limit=2)
    assert [(r["position"], r["event_type"], r["agent_id"]) for r in rows] == [
        ("0:1", "TaskAssigned", "nobody"), ("0:2", "TaskStarted", "nobody")]
    assert rows[0]["reason"] == "agent nobody has not joined queue q" and rows[0]["occurred_at"] == 50
    rest, end = queries.rejections(log.store, limit=2, cursor=cursor)
    assert end is None and [(r["task_id"], r["reason"]) for r in rest] == [("t", "task t was already submitted")]


def _cut_by_rule(placed: list[Recorded], until_ms: int) -> dict[int, int]:
    """Where `CutRule` (the log's own cut) closes each partition; its end when it never closes."""
    rule = CutRule(Cut(until_ms=until_ms), decode=lambda raw: raw.value, stamp=lambda rec: rec.event.occurred_at)
    ends: dict[int, int] = {}
    for rec in placed:
        raw = ConsumedRecord("events", rec.partition, rec.offset, 0, None, rec, ())  # type: ignore[arg-type]
        if rule.admit(raw) is not None:
            ends[rec.partition] = rec.offset + 1
        else:
            ends.setdefault(rec.partition, rec.offset)
    return ends


def test_the_time_index_cuts_each_partition_at_its_first_event_after_the_time(log: Log) -> None:
    a, b = Events(queue="a", now=0), Events(queue="b", now=0, seed="b")
    times = {"a": [100, 300, 200, 300, 500, 400], "b": [50, 250, 600]}
    for i, at in enumerate(times["a"]):
        log.apply(a.submit(f"a{i}", at=at))
    for i, at in enumerate(times["b"]):
        log.apply(b.submit(f"b{i}", at=at))
    rows = {k: v for k, v in log.store.scan("time_index")}
    assert rows == {"0000\x000000000000000100": 0, "0000\x000000000000000300": 1, "0000\x000000000000000500": 4,
                    "0001\x000000000000000050": 0, "0001\x000000000000000250": 1, "0001\x000000000000000600": 2}
    for until in (-1, 0, 50, 99, 100, 200, 299, 300, 450, 500, 599, 600, 10**20):
        assert queries.cut_offsets(log.store, until) == _cut_by_rule(log.placed, until), until
    assert queries.cut_offsets(log.store, 250) == {0: 1, 1: 2}


def test_a_task_as_of_a_time_is_the_fold_of_the_log_cut_there(log: Log) -> None:
    e = Events(queue="q", now=0)
    log.apply(e.join("a1"), e.submit("t", at=100), e.assign("t", "a1", at=200), e.start("t", "a1", at=150),
              e.complete("t", "a1", at=400), e.start("t", "a1", at=500))
    assert queries.task_at(log.store, "t", 99) is None
    assert queries.task_at(log.store, "t", 100)["state"] == "queued"
    assert queries.task_at(log.store, "t", 199)["state"] == "queued"
    # 150 comes after 200 in the log: a cut at 199 closes before the assignment, so before the start too
    assert queries.task_at(log.store, "t", 200)["state"] == "running"
    assert queries.task_at(log.store, "t", 10**6)["state"] == "completed"
    for until in (99, 100, 150, 199, 200, 399, 400, 500):
        cut = queries.cut_offsets(log.store, until)
        ledger, _ = fold(r.event for r in log.placed if r.offset < cut[r.partition])
        task = ledger.state("q").task("t")
        got = queries.task_at(log.store, "t", until)
        assert (fold_part(got) if got else None) == (task_json(task) if task else None), until


def test_stored_events_read_back_as_the_json_streams_send_live() -> None:
    e = Events(queue="q", now=0)
    candidates = [{"agent_id": "a1", "score": 0.1 + 0.2, "load": 1, "slots": 4},
                  {"agent_id": "a2", "score": 1e-7, "eligible": False, "reason": "quarantined"}]
    samples = [e.submit("t", payload='{"text": "héllo ✓ \\u0000"}', labels={"zone": "é"}), e.join("a1", slots=2),
               e.assign("t", "a1", candidates=candidates), e.fail("t", "a1", error="line 1\nline \"2\""),
               e.leave("a1", "lost"), e.redrive("t"), e.resolved("t", "dep", "failed")]
    for event in samples:
        assert json.loads(event_bytes(event)) == event_json(event), event.event_type


def test_a_cursor_only_pages_the_list_it_came_from(log: Log) -> None:
    e = Events(queue="q", now=0)
    log.apply(*[e.submit(f"t{i}", session_id=f"s{i % 2}") for i in range(4)])
    _, cursor = queries.list_tasks(log.store, session_id="s0", limit=1)
    assert [r["task_id"] for r in queries.list_tasks(log.store, session_id="s0", cursor=cursor)[0]] == ["t2"]
    for other in ({"session_id": "s1"}, {"queue": "q"}, {}):
        with pytest.raises(queries.BadCursor):
            queries.list_tasks(log.store, cursor=cursor, **other)
