"""The read side on a real broker: a LiveProjection with every view tails the log, the query
functions answer from its store, as-of reads equal the fold of the log cut by time, and the
GET routes serve them over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from projections import queries
from projections.gateway import errors, reads
from projections.gateway.deps import ANONYMOUS_ADMIN, Principal, Role, Runtime
from projections.live import LiveProjection
from projections.projector import EVENTS, HEARTBEATS, PROGRESS
from projections.views import all_views
from projections.views.viewrows import fold_part, task_json
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.events import Event
from taskfold.core.fold import fold
from taskfold.log.eventlog import Cut, EventLog, Recorded
from taskfold.log.records import RawRecord
from taskfold.core.telemetry import ChunkKind, Heartbeat, ProgressChunk
from taskfold.core.testing import Events
from taskfold.log.wire import encode_record

T0 = 1_700_000_000_000  # in the past: the fold rejects stamps beyond the skew bound ahead of the broker


class Auth:
    """Stands in for the gateway's auth: every caller is `principal`."""

    def __init__(self, principal: Principal = ANONYMOUS_ADMIN) -> None:
        self.principal = principal

    def authorize(self, request, roles) -> Principal:  # noqa: ANN001
        if not self.principal.can(*roles):
            raise errors.ApiError(403, "forbidden", "not allowed")
        return self.principal


def workload() -> list[Event]:
    """Two queues: completions, a retry, a dead letter, rejections, a cancel and sessions; 10 ms apart."""
    events: list[Event] = []
    clock = iter(range(T0, T0 + 10**6, 10))
    for q in ("mail", "pdf"):
        e = Events(queue=q, seed=q)
        events += [e.join(f"{q}-a1", slots=4, at=next(clock))]
        for i in range(12):
            task = f"{q}-{i}"
            events.append(e.submit(task, at=next(clock), session_id=f"chat-{i % 3}", payload=json.dumps({"i": i}),
                                   max_attempts=1 if i == 5 else 3))
            if i % 4 == 3:
                continue  # left queued
            events += [e.assign(task, f"{q}-a1", at=next(clock)), e.start(task, f"{q}-a1", at=next(clock))]
            if i == 5:
                events.append(e.fail(task, f"{q}-a1", error="no such file", at=next(clock)))
            elif i == 6:
                events += [e.cancel(task, at=next(clock)), e.cancelled(task, f"{q}-a1", at=next(clock))]
            else:
                events += [e.complete(task, f"{q}-a1", result=json.dumps({"done": task}), at=next(clock)),
                           e.complete(task, f"{q}-a1", at=next(clock))]  # rejected: already completed
    return events


async def _telemetry(log: EventLog, topics: TopicNames) -> None:
    chunks = [ProgressChunk(chunk_id=f"mail-0/1/{seq}", task_id="mail-0", attempt=1, agent_id="mail-a1",
                            queue="mail", seq=seq, kind=ChunkKind.text, content=f"line {seq}", occurred_at=T0 + seq)
              for seq in range(3)]
    beat = Heartbeat(agent_id="mail-a1", queues=["mail"], sent_at=T0 + 99, load={"mail": 1}, slots={"mail": 4})
    await log.writer.append(topics.progress, [RawRecord("mail", *encode_record(c)) for c in chunks])
    await log.writer.append(topics.heartbeats, [RawRecord("mail-a1", *encode_record(beat))])


@pytest.fixture
async def running(broker: Broker, topics: TopicNames, tmp_path: Path):
    live = LiveProjection(broker.bootstrap, topics, tmp_path / "store", all_views(), tansu=broker.is_tansu)
    await live.start()
    log = EventLog(broker.bootstrap, topics, tansu=broker.is_tansu)
    await log.start()
    try:
        yield live, log
    finally:
        await log.stop()
        await live.stop()


async def _applied(live: LiveProjection, log: EventLog, topics: TopicNames) -> None:
    ends = {EVENTS: await log.end_offsets(), PROGRESS: await log.reader.end_offsets(topics.progress),
            HEARTBEATS: await log.reader.end_offsets(topics.heartbeats)}
    await live.wait_for(lambda: all(live.projector.next_offset(role, p) >= end
                                    for role, by_p in ends.items() for p, end in by_p.items()), timeout=30)


async def test_queries_answer_from_the_live_projection_and_as_of_equals_the_cut_log(running, topics) -> None:
    live, log = running
    events = workload()
    positions = await log.append(events)
    await _telemetry(log, topics)
    await _applied(live, log, topics)
    store = live.store

    task = queries.get_task(store, "mail-1")
    assert (task["state"], json.loads(task["result"])) == ("completed", {"done": "mail-1"})
    history = queries.task_history(store, "mail-1")
    expected = [f"{pos.partition}:{pos.offset}" for pos, ev in zip(positions, events)
                if getattr(ev, "task_id", None) == "mail-1"]
    assert [row["position"] for row in history] == expected and len(expected) == 5
    assert history[-1]["verdict"]["outcome"] == "rejected"
    queue_rows = list(queries.queue_events(store, "pdf"))
    assert len(queue_rows) == sum(ev.queue == "pdf" for ev in events)
    dead, _ = queries.dead_letters(store)
    assert sorted(d["task_id"] for d in dead) == ["mail-5", "pdf-5"]
    rejected, _ = queries.rejections(store, limit=500)
    assert len(rejected) == 2 * 7 and all(r["reason"].endswith("is already completed") for r in rejected)
    session, _ = queries.list_tasks(store, session_id="chat-1", limit=100)
    assert sorted(t["task_id"] for t in session) == sorted(f"{q}-{i}" for q in ("mail", "pdf") for i in (1, 4, 7, 10))
    queued, _ = queries.list_tasks(store, queue="mail", state="queued")
    assert [t["task_id"] for t in queued] == ["mail-3", "mail-7", "mail-11"]
    assert [c["chunk"]["content"] for c in queries.task_chunks(store, "mail-0")] == ["line 0", "line 1", "line 2"]
    agent = queries.get_agent(store, "mail-a1")
    assert agent["heartbeat"]["sent_at"] == T0 + 99 and agent["held_ever"] == 9 and agent["held_now"] == 0

    middle = events[len(events) // 2 + 3].occurred_at
    kept = [entry async for entry in log.read(cut=Cut(until_ms=middle))]
    ledger, _ = fold(entry.event for entry in kept if isinstance(entry, Recorded))
    log_ends = await log.end_offsets()
    assert queries.cut_offsets(store, middle) == {p: o for p, o in _ends_of(kept, log_ends).items() if log_ends[p]}
    for queue, state in ledger.queues.items():
        for task_id, folded in state.tasks.items():
            assert fold_part(queries.task_at(store, task_id, middle, queue=queue)) == task_json(folded)
    assert queries.task_at(store, "pdf-11", middle) is None  # submitted later


def _ends_of(kept: list, log_ends: dict[int, int]) -> dict[int, int]:
    """Where the cut closed each partition: after its last kept record (its start when none was kept)."""
    out = dict.fromkeys(log_ends, 0)
    for entry in kept:
        out[entry.partition] = entry.offset + 1
    return out


def _client(live: LiveProjection, log: EventLog, principal: Principal = ANONYMOUS_ADMIN) -> httpx.AsyncClient:
    app = FastAPI()
    errors.install(app)
    app.include_router(reads.router)
    app.state.runtime = Runtime(live=live, log=log, auth=Auth(principal))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


async def test_the_get_routes_serve_tasks_lists_agents_queues_and_audit_views(running, topics) -> None:
    live, log = running
    events = workload()
    await log.append(events)
    await _telemetry(log, topics)
    await _applied(live, log, topics)
    async with _client(live, log) as http:
        task = (await http.get("/v1/tasks/mail-0")).json()
        assert task["payload"] == {"i": 0} and task["result"] == {"done": "mail-0"} and task["chunks"]["chunks"] == 3
        assert (await http.get("/v1/tasks/mail-0/result")).json()["result"] == {"done": "mail-0"}
        waiting = await http.get("/v1/tasks/mail-3/result")
        assert waiting.status_code == 404 and waiting.json()["error"]["code"] == "not_finished"
        assert (await http.get("/v1/tasks/nope")).json()["error"]["code"] == "not_found"
        submitted = next(ev.occurred_at for ev in events if ev.event_type == "TaskSubmitted")  # mail-0's
        then = (await http.get("/v1/tasks/mail-0", params={"as_of": str(submitted)})).json()
        assert then["state"] == "queued" and then["as_of"] == submitted
        history = (await http.get("/v1/tasks/mail-0/history", params={"limit": 2})).json()
        rest = (await http.get("/v1/tasks/mail-0/history", params={"cursor": history["next_cursor"]})).json()
        assert [r["event"]["type"] for r in history["events"] + rest["events"]] == [
            "TaskSubmitted", "TaskAssigned", "TaskStarted", "TaskCompleted", "TaskCompleted"]
        page = (await http.get("/v1/tasks", params={"queue": "pdf", "limit": 5})).json()
        more = (await http.get("/v1/tasks", params={"queue": "pdf", "limit": 50, "cursor": page["next_cursor"]})).json()
        assert [t["task_id"] for t in page["tasks"] + more["tasks"]] == [f"pdf-{i}" for i in range(12)]
        assert more["next_cursor"] is None
        bad = await http.get("/v1/tasks", params={"state": "urgent"})
        assert bad.status_code == 422 and bad.json()["error"]["problems"][0]["field"] == "query.state"
        assert [a["agent_id"] for a in (await http.get("/v1/agents")).json()["agents"]] == ["mail-a1", "pdf-a1"]
        assert (await http.get("/v1/agents/pdf-a1/tasks", params={"limit": 3})).json()["next_cursor"]
        queue = (await http.get("/v1/queues/mail")).json()
        assert queue["oldest_waiting"]["task_id"] == "mail-3" and queue["depth"] == 3
        stats = (await http.get("/v1/analytics", params={"queue": "mail", "minutes": 5})).json()
        assert stats["totals"]["completed"] == 7 and stats["error_rate"] == pytest.approx(1 / 8)
        assert len((await http.get("/v1/rejections")).json()["rejections"]) == 14
        assert [d["task_id"] for d in (await http.get("/v1/dead-letters", params={"queue": "pdf"})).json()[
            "dead_letters"]] == ["pdf-5"]
    submitter = Principal("app", frozenset({Role.submitter}))
    async with _client(live, log, submitter) as http:
        assert (await http.get("/v1/tasks/mail-0")).status_code == 200
        assert (await http.get("/v1/rejections")).status_code == 403
        assert (await http.get("/v1/tasks/mail-0", params={"as_of": "2027-01-15T08:00:00Z"})).status_code == 403
