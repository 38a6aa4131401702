"""The agents, queues, analytics and transcripts views, read back through `projections.queries`."""

from __future__ import annotations

from pathlib import Path

import pytest

from projections import queries
from projections.projector import Projector
from projections.store import Store
from projections.view import Telemetry
from projections.views import all_views
from projections.views.analytics import bucket, bucket_value
from taskfold.core.events import Event
from taskfold.log.eventlog import Recorded
from taskfold.core.telemetry import ChunkKind, Heartbeat, ProgressChunk
from taskfold.core.testing import Events

MINUTE = 60_000
T0 = 1_800_000_000_000 // MINUTE * MINUTE  # a minute boundary


class Log:
    """A store fed through a Projector with every view; each queue on its own partition."""

    def __init__(self, path: Path) -> None:
        self.store = Store(path)
        self.projector = Projector(self.store, all_views())
        self.partitions: dict[str, int] = {}
        self.next: dict[tuple[str, int], int] = {}

    def _place(self, role: str, queue: str) -> tuple[int, int]:
        p = self.partitions.setdefault(queue, len(self.partitions))
        o = self.next.get((role, p), 0)
        self.next[(role, p)] = o + 1
        return p, o

    def apply(self, *events: Event) -> None:
        self.projector.apply("events", [Recorded(e, *self._place("events", e.queue), 0) for e in events])

    def chunk(self, task: str, attempt: int, seq: int, queue: str = "q", chunk_id: str | None = None,
              at: int = T0) -> str:
        record = ProgressChunk(chunk_id=chunk_id or f"{task}/{attempt}/{seq}", task_id=task, attempt=attempt,
                               agent_id="a1", queue=queue, seq=seq, kind=ChunkKind.text, content=f"part {seq}",
                               occurred_at=at)
        p, o = self._place("progress", queue)
        self.projector.apply("progress", [Telemetry("progress", p, o, record)])
        return f"{p}:{o}"

    def beat(self, agent: str, sent_at: int, **fields) -> None:  # noqa: ANN003
        p, o = self._place("heartbeats", "beats")
        self.projector.apply("heartbeats", [Telemetry("heartbeats", p, o, Heartbeat(agent_id=agent, sent_at=sent_at,
                                                                                      **fields))])


@pytest.fixture
def log(tmp_path: Path):
    lg = Log(tmp_path / "store")
    yield lg
    lg.store.close()


def test_a_queue_counts_tasks_by_state_and_priority_and_knows_its_oldest_waiting_task(log: Log) -> None:
    e = Events(queue="q", now=T0)
    log.apply(e.join("a1", slots=2), e.submit("old", priority="low"), e.submit("mid", priority="high"),
              e.submit("new", priority="high"), e.submit("later", not_before=T0 + 10 * MINUTE),
              e.submit("child", depends_on=["mid"]))
    queue = queries.get_queue(log.store, "q", now_ms=T0 + 1_000)
    assert queue["states"] == {"blocked": 1, "scheduled": 1, "queued": 3, "assigned": 0, "running": 0,
                               "retry_wait": 0, "completed": 0, "dead_lettered": 0, "cancelled": 0}
    assert queue["waiting_by_priority"] == {"critical": 0, "high": 2, "medium": 1, "low": 1}
    assert queue["depth"] == 4 and queue["submitted"] == 5
    assert queue["oldest_waiting"] == {"task_id": "old", "submitted_at": T0 + 2, "priority": "low", "state": "queued"}
    assert queue["oldest_waiting_age_ms"] == 998
    assert [a["agent_id"] for a in queue["agents"]] == ["a1"]
    log.apply(e.assign("old", "a1"), e.assign("mid", "a1"), e.start("mid", "a1"), e.complete("mid", "a1"),
              e.fail("old", "a1", retryable=False))
    queue = queries.get_queue(log.store, "q")
    assert queue["oldest_waiting"]["task_id"] == "new"
    assert queue["states"]["queued"] == 2 and queue["states"]["dead_lettered"] == 1
    assert queue["states"]["completed"] == 1 and queue["states"]["blocked"] == 0
    assert (queue["completed"], queue["failed"], queue["dead_lettered"]) == (1, 1, 1)
    assert queue["waiting_by_priority"] == {"critical": 0, "high": 1, "medium": 2, "low": 0}
    assert (queue["events"], queue["accepted"], queue["rejected"]) == (11, 11, 0)
    assert [q["queue"] for q in queries.list_queues(log.store)] == ["q"]
    assert queries.get_queue(log.store, "nope") is None


def test_an_agent_has_seats_load_performance_quarantine_and_its_tasks(log: Log) -> None:
    e = Events(queue="q", now=T0)
    log.apply(e.join("a1", slots=3, capabilities=["gpu"], labels={"zone": "eu"}))
    for i in range(3):
        log.apply(e.submit(f"f{i}"), e.assign(f"f{i}", "a1"), e.fail(f"f{i}", "a1", retryable=False))
    log.apply(e.submit("held"), e.assign("held", "a1"), e.start("held", "a1"))
    agent = queries.get_agent(log.store, "a1")
    (seat,) = agent["queues"]
    assert (seat["slots"], seat["active"], seat["capabilities"], seat["labels"]) == (3, True, ["gpu"], {"zone": "eu"})
    assert seat["load"] == 1 and seat["consecutive_failures"] == 3 and seat["failed"] == 3
    assert seat["quarantined_until"] == T0 + 10 + 30_000  # the third failure's time + the default cool-down
    assert seat["quarantine_reason"] == f"3 consecutive failures, the last on task f2 (failed) at {T0 + 10}"
    assert seat["success_ewma"] == pytest.approx(0.8 ** 3)
    assert (agent["held_now"], agent["held_ever"], agent["attempts"], agent["load"]) == (1, 4, 4, 1)
    held, _ = queries.agent_tasks(log.store, "a1", held=True)
    assert held == [{"task_id": "held", "queue": "q", "attempt": 1, "task_state": "running", "assigned_at": T0 + 12}]
    ever, cursor = queries.agent_tasks(log.store, "a1", limit=3)
    rest, end = queries.agent_tasks(log.store, "a1", limit=3, cursor=cursor)
    assert end is None and [t["task_id"] for t in ever + rest] == ["f0", "f1", "f2", "held"]
    assert ever[0]["outcome"] == "failed" and ever[0]["task_state"] == "dead_lettered"
    log.apply(e.leave("a1", "lost"))
    agent = queries.get_agent(log.store, "a1")
    assert agent["held_now"] == 0 and not agent["active"] and agent["queues"][0]["left_at"] == T0 + 14
    assert queries.agent_tasks(log.store, "a1", held=True) == ([], None)
    assert queries.agent_tasks(log.store, "a1")[0][3]["outcome"] == "lost"


def test_an_agent_keeps_its_last_heartbeat_and_is_listed_even_before_it_joins(log: Log) -> None:
    log.beat("a2", T0, queues=["q"], load={"q": 1}, slots={"q": 4})
    log.beat("a2", T0 + 500, queues=["q"], load={"q": 2}, slots={"q": 4}, draining=True)
    agent = queries.get_agent(log.store, "a2")
    assert agent["queues"] == [] and agent["heartbeat"] == {
        "agent_id": "a2", "sent_at": T0 + 500, "queues": ["q"], "load": {"q": 2}, "slots": {"q": 4},
        "draining": True, "position": "0:1"}
    e = Events(queue="q", now=T0)
    log.apply(e.join("a1"))
    assert [a["agent_id"] for a in queries.list_agents(log.store)] == ["a1", "a2"]
    assert queries.get_agent(log.store, "nobody") is None


def test_analytics_count_minutes_and_measure_waits_runs_errors_and_utilization(log: Log) -> None:
    e = Events(queue="q", now=T0)
    log.apply(e.join("a1", slots=2), e.submit("a", at=T0, task_type="mail"), e.submit("b", at=T0, task_type="pdf"),
              e.assign("a", "a1", at=T0 + 100), e.start("a", "a1", at=T0 + 200),
              e.complete("a", "a1", at=T0 + 1_200),
              e.assign("b", "a1", at=T0 + MINUTE + 1_000), e.fail("b", "a1", at=T0 + MINUTE + 3_000, retryable=False),
              e.start("ghost", "a1", at=T0 + MINUTE + 3_001))
    out = queries.analytics(log.store, queue="q", minutes=60)
    assert out["until_ms"] == T0 + 2 * MINUTE and out["from_ms"] == T0 - 58 * MINUTE
    assert out["totals"] == {"submitted": 2, "completed": 1, "failed": 1, "dead_lettered": 1, "cancelled": 0,
                             "rejected": 1}
    assert out["error_rate"] == 0.5
    assert [(m["minute"], m["completed"], m["failed"]) for m in out["throughput"]] == [(T0, 1, 0), (T0 + MINUTE, 0, 1)]
    wait, run = out["queue_wait_ms"], out["run_time_ms"]
    assert wait["count"] == 2 and wait["mean"] == (100 + MINUTE + 1_000) / 2
    assert wait["p50"] == pytest.approx(100, rel=0.13) and wait["p99"] == pytest.approx(MINUTE + 1_000, rel=0.13)
    assert (run["count"], run["mean"]) == (1, 1_000) and run["p95"] == pytest.approx(1_000, rel=0.13)
    assert out["by_type"]["pdf"]["run_time_ms"]["count"] == 0 and out["by_type"]["mail"]["run_time_ms"]["count"] == 1
    (util,) = out["agents"]
    assert util == {"agent_id": "a1", "queue": "q", "busy_ms": 1_000 + 2_000, "slots": 2,
                    "utilization": 3_000 / (2 * 60 * MINUTE)}
    recent = queries.analytics(log.store, minutes=1)
    assert recent["totals"]["completed"] == 0 and recent["totals"]["failed"] == 1
    assert queries.analytics(log.store, queue="q", minutes=1, until_ms=T0 + 5)["totals"]["completed"] == 1


def test_histogram_buckets_are_log_spaced_within_a_few_percent() -> None:
    assert bucket(0) == 0 and bucket_value(0) == 0
    for ms in (1, 7, 100, 999, 12_345, 3_600_000):
        assert bucket_value(bucket(ms)) == pytest.approx(ms, rel=0.07)
    assert bucket(100) < bucket(113) and bucket(1_000) == bucket(1_050)


def test_progress_chunks_are_kept_per_task_in_log_order_once_each(log: Log) -> None:
    e = Events(queue="q", now=T0)
    log.apply(e.submit("t"))
    first = log.chunk("t", 1, 0)
    log.chunk("t", 1, 1)
    log.chunk("t", 1, 1)  # sent twice: same chunk id
    log.chunk("other", 1, 0)
    log.chunk("t", 2, 0)
    rows = queries.task_chunks(log.store, "t")
    assert [(r["position"], r["chunk"]["attempt"], r["chunk"]["seq"]) for r in rows] == [
        ("0:0", 1, 0), ("0:1", 1, 1), ("0:4", 2, 0)]
    assert rows[0]["chunk"]["content"] == "part 0" and first == "0:0"
    assert [r["position"] for r in queries.task_chunks(log.store, "t", after_position="0:1")] == ["0:4"]
    assert [r["position"] for r in queries.task_chunks(log.store, "t", attempt=2)] == ["0:4"]
    assert [r["chunk"]["task_id"] for r in queries.queue_chunks(log.store, "q", after_position="0:0")] == [
        "t", "other", "t"]
    assert queries.get_task(log.store, "t")["chunks"] == {"chunks": 3, "by_attempt": {"1": 2, "2": 1},
                                                           "last_position": "0:4"}
