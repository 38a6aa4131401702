"""`taskfold.Client` against the real broker, over both transports: Kafka (the client folds the
log) and HTTP (a real `taskfold gateway` process). One suite runs against each.

The test plays the scheduler and the agent: it appends TaskAssigned, TaskStarted, progress
chunks and TaskCompleted itself, so no worker is needed and nothing waits on a timer.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest

import taskfold
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames, ensure_topics
from taskfold.clients import Client, Duplicate, NotFound, Refused, TimedOut
from taskfold.log.eventlog import EventLog
from taskfold.log.records import RawRecord
from taskfold.log.writer import LogWriter
from taskfold.core.telemetry import ChunkKind, ProgressChunk
from taskfold.core.testing import Events
from taskfold.log.wire import encode_record
from tests.integration.test_cli import cli_env
from tests.integration.test_gateway_cli import running_gateway

pytestmark = pytest.mark.integration
TOKENS = "sub-tok:submitter,adm-tok:admin"


@pytest.fixture(scope="module")
def deployment(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TopicNames, str]]:
    """Topics of this module and a `taskfold gateway` process serving them: (topics, url)."""
    topics = TopicNames(prefix=f"test.{uuid.uuid4().hex[:12]}.")
    asyncio.run(ensure_topics(broker.bootstrap, topics, partitions=4))
    env = {**cli_env(broker, topics), "TASKFOLD_TOKENS": TOKENS}
    with running_gateway(env, tmp_path_factory.mktemp("gateway")) as (url, _, _):
        yield topics, url


@pytest.fixture(params=["kafka", "http"])
def client(request: pytest.FixtureRequest, broker: Broker, deployment) -> Iterator[Client]:
    """A sync Client over each transport (HTTP with an admin token, for redrive)."""
    topics, url = deployment
    if request.param == "kafka":
        made = taskfold.Client.kafka(broker.bootstrap, topics=topics, tansu=broker.is_tansu)
    else:
        made = taskfold.Client.http(url, "adm-tok")
    with made:
        yield made


def queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


class Play:
    """The scheduler and the agent, played by the test: events and chunks appended to the real log."""

    def __init__(self, broker: Broker, topics: TopicNames, queue_name: str) -> None:
        self.broker, self.topics, self.events = broker, topics, Events(queue=queue_name, seed=uuid.uuid4().hex)

    def append(self, *events) -> None:
        async def go() -> None:
            async with EventLog(self.broker.bootstrap, self.topics, tansu=self.broker.is_tansu) as log:
                await log.append(list(events))
        asyncio.run(go())

    def chunks(self, task_id: str, *texts: str) -> None:
        async def go() -> None:
            async with LogWriter(self.broker.bootstrap, tansu=self.broker.is_tansu) as writer:
                records = []
                for seq, text in enumerate(texts):
                    chunk = ProgressChunk(chunk_id=f"{self.events.queue}/{task_id}/1/{seq}", task_id=task_id, attempt=1, agent_id="a-1",
                                          queue=self.events.queue, seq=seq, kind=ChunkKind.text, content=text,
                                          occurred_at=self.events.now)
                    value, headers = encode_record(chunk)
                    records.append(RawRecord(key=self.events.queue, value=value, headers=headers))
                await writer.append(self.topics.progress, records)
        asyncio.run(go())

    def run(self, task_id: str, result: str = '{"ok": true}', *, texts: tuple[str, ...] = ()) -> None:
        """Join, assign, start, stream `texts`, complete."""
        e = self.events
        self.append(e.join("a-1", slots=4), e.assign(task_id, "a-1"), e.start(task_id, "a-1"))
        if texts:
            self.chunks(task_id, *texts)
        self.append(e.complete(task_id, "a-1", result=result))


def test_submit_get_wait_and_result(client: Client, broker, deployment) -> None:
    name = queue()
    receipt = client.submit(name, "send", {"to": "ada@example.com"}, priority="high", task_id="t-1")
    assert (receipt.verdict, receipt.duplicate, receipt.task_id) == ("accepted", False, "t-1")
    assert receipt.task.state.value == "queued" and receipt.task.payload == {"to": "ada@example.com"}
    assert client.get("t-1", queue=name).priority == "high"
    done = threading.Thread(target=Play(broker, deployment[0], name).run, args=("t-1", '{"sent": 1}'))
    done.start()
    task = client.wait("t-1", queue=name, timeout=30)
    done.join()
    assert (task.state.value, task.result, task.finished) == ("completed", {"sent": 1}, True)


def test_wait_times_out_naming_the_task(client: Client) -> None:
    name = queue()
    client.submit(name, "send", task_id="slow")
    with pytest.raises(TimedOut, match="task slow is still queued after 0.5 s") as caught:
        client.wait("slow", queue=name, timeout=0.5)
    assert caught.value.task_id == "slow"


def test_idempotent_retry_returns_the_original_and_a_different_request_is_a_duplicate(client: Client) -> None:
    name = queue()
    first = client.submit(name, "send", {"n": 1}, idempotency_key="k-1")
    again = client.submit(name, "send", {"n": 1}, idempotency_key="k-1")
    assert again.duplicate and again.task_id == first.task_id
    with pytest.raises(Duplicate, match="idempotency key 'k-1' was already used") as caught:
        client.submit(name, "send", {"n": 2}, idempotency_key="k-1")
    assert caught.value.task_id == first.task_id and "payload" in caught.value.message
    client.submit(name, "send", task_id="taken")
    with pytest.raises(Duplicate, match="task taken was already submitted") as taken:
        client.submit(name, "send", task_id="taken")
    assert taken.value.task_id == "taken"


def test_bad_fields_are_refused_by_name_and_nothing_is_appended(client: Client) -> None:
    name = queue()
    with pytest.raises(Refused) as caught:
        client.submit(name, "send", priority="urgent", max_attempts=0)
    assert set(caught.value.fields) == {"priority", "max_attempts"}
    with pytest.raises(Refused) as many:
        client.submit_many([{"queue": name, "task_type": "a"}, {"queue": name, "task_type": ""}])
    assert many.value.fields == ["tasks.1.task_type"]
    with pytest.raises(Refused, match="unknown task id") as deps:
        client.submit(name, "build", depends_on=["ghost"])
    assert deps.value.fields == ["depends_on"]
    with pytest.raises(NotFound):
        client.get("never-submitted", queue=name)


def test_submit_many_answers_each_task(client: Client) -> None:
    name = queue()
    client.submit(name, "send", task_id="m-0")
    outcomes = client.submit_many([{"queue": name, "task_type": "send", "task_id": f"m-{i}"} for i in range(3)])
    assert isinstance(outcomes[0], Duplicate) and outcomes[0].task_id == "m-0"
    assert [o.task_id for o in outcomes[1:]] == ["m-1", "m-2"]


def test_cancel_and_redrive(client: Client, broker, deployment) -> None:
    name = queue()
    c1, d1 = f"c-{name}", f"d-{name}"  # the module's transports share the log: ids unique to this run
    client.submit(name, "send", task_id=c1)
    cancelled = client.cancel(c1, reason="not needed")
    assert cancelled.verdict == "accepted" and cancelled.task.state.value == "cancelled"
    with pytest.raises(Refused, match=f"task {c1} is already cancelled"):
        client.cancel(c1)
    with pytest.raises(NotFound):
        client.cancel("no-such-task")
    client.submit(name, "send", task_id=d1, max_attempts=1)
    play = Play(broker, deployment[0], name)
    e = play.events
    play.append(e.join("a-1"), e.assign(d1, "a-1"), e.start(d1, "a-1"), e.fail(d1, "a-1", retryable=False))
    assert client.wait(d1, timeout=30).state.value == "dead_lettered"
    redriven = client.redrive(d1, extra_attempts=2, reason="fixed")
    assert redriven.task.state.value == "queued" and redriven.task.max_attempts == 3
    with pytest.raises(Refused, match="only dead-lettered tasks can be redriven"):
        client.redrive(d1)


def test_stream_events_and_chunks_and_resume(client: Client, broker, deployment) -> None:
    name = queue()
    client.submit(name, "chat", task_id="s-1")
    Play(broker, deployment[0], name).run("s-1", texts=("hel", "lo"))
    items = list(client.stream("s-1", queue=name))
    kinds = [(i.kind, i.event_type or (i.chunk or {}).get("content")) for i in items]
    assert kinds[-1] == ("end", None) and items[-1].state.value == "completed"
    events = [k for k in kinds if k[0] == "event"]
    assert events == [("event", t) for t in ("TaskSubmitted", "TaskAssigned", "TaskStarted", "TaskCompleted")]
    assert [k for k in kinds if k[0] == "progress"] == [("progress", "hel"), ("progress", "lo")]
    assert all(i.verdict.outcome == "accepted" for i in items if i.kind == "event")
    # Resuming after any item gives, per topic, exactly what its cursor had not covered (the
    # Kafka transport interleaves the two topics in the order its readers get them).
    for middle in items[:-1]:
        rest = list(client.stream("s-1", queue=name, after=middle.cursor))
        assert rest[-1].kind == "end"
        for kind in ("event", "progress"):
            assert [offset(i) for i in rest if i.kind == kind] == \
                [offset(i) for i in items if i.kind == kind and offset(i) > covered(middle.cursor, kind)]


def covered(cursor: str, kind: str) -> int:
    """How far a cursor `p:e` or `p:e.c` says a topic was delivered."""
    events, _, progress = cursor.partition(":")[2].partition(".")
    return int(events) if kind == "event" else int(progress or -1)


def offset(item) -> int:
    """An item's own offset: its cursor's part for its topic."""
    return covered(item.cursor, item.kind)


def test_queues_and_agents(client: Client, broker, deployment) -> None:
    name = queue()
    client.submit(name, "send", task_id="w-1")
    client.submit(name, "send", task_id="w-2")
    play = Play(broker, deployment[0], name)
    play.append(play.events.join(f"agent-{name}", slots=3), play.events.assign("w-1", f"agent-{name}"))
    wait_for(lambda: client.get("w-1", queue=name).state.value == "assigned")
    row = next(q for q in client.queues() if q.queue == name)
    assert (row.count("queued"), row.count("assigned"), row.depth, row.agents, row.slots, row.load) == \
        (1, 1, 1, 1, 3, 1)
    agent = next(a for a in client.agents() if a.agent_id == f"agent-{name}")
    assert (agent.active, agent.slots, agent.load, [s.queue for s in agent.seats]) == (True, 3, 1, [name])


def wait_for(check, deadline: float = 30.0) -> None:
    """Until check() is true (the HTTP gateway applies appended events a moment later)."""
    import time

    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)


def test_submit_workflow_answers_each_node_and_a_resubmit_folds_as_duplicates(client: Client) -> None:
    first, second = queue(), queue()
    spec = {"workflow_id": f"wf-{uuid.uuid4().hex[:8]}", "queue": first, "nodes": [
        {"name": "fetch", "task_type": "get"},
        {"name": "report", "task_type": "build", "queue": second, "depends_on": ["fetch"]}]}
    receipt = client.submit_workflow(spec)
    assert [(n.node, n.queue, n.verdict) for n in receipt.nodes] == [
        ("fetch", first, "accepted"), ("report", second, "accepted")]
    assert client.get(receipt.task_id("report"), queue=second).state.value == "blocked"
    again = client.submit_workflow(spec)
    assert [n.verdict for n in again.nodes] == ["duplicate", "duplicate"]
    assert [n.task_id for n in again.nodes] == [n.task_id for n in receipt.nodes]


def test_a_workflow_with_a_cycle_is_refused_naming_the_nodes(client: Client) -> None:
    spec = {"workflow_id": "wf-cycle", "queue": queue(), "nodes": [
        {"name": "a", "task_type": "t", "depends_on": ["b"]}, {"name": "b", "task_type": "t", "depends_on": ["a"]}]}
    with pytest.raises(Refused, match="dependency cycle: a -> b -> a"):
        client.submit_workflow(spec)
