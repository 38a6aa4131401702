"""The agent SDK against a real broker: the test plays the scheduler (it appends TaskSubmitted
and TaskAssigned), and an independent fold of the log (the `Probe`) checks what the agent did.

No sleeps as synchronisation: every wait is on a condition of the folded log, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest

from taskfold.agent import Agent, NonRetryable, TaskContext, queue_partition
from taskfold.core.reports import OUTCOME, STARTED, AttemptKey, report_id
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.edge import now_ms
from taskfold.core.events import Event
from taskfold.core.fold import Ledger
from taskfold.log.batches import read_batches
from taskfold.log.eventlog import EventLog, Recorded, entry_of
from taskfold.log.records import RawRecord
from taskfold.log.writer import LogWriter
from taskfold.core.state import TaskState, Verdict
from taskfold.core.telemetry import Heartbeat, ProgressChunk
from taskfold.core.testing import Events
from taskfold.log.wire import decode_record as decode_any

pytestmark = pytest.mark.integration
DEADLINE = 10.0  # seconds; every wait below normally ends in well under one


class Probe:
    """Follows the test's topics live and folds the events with its own Ledger, as an auditor would."""

    def __init__(self, broker: Broker, topics: TopicNames) -> None:
        self.topics = topics
        self.log = EventLog(broker.bootstrap, topics, tansu=broker.is_tansu)
        self.ledger = Ledger()
        self.events: list[tuple[Event, Verdict, int]] = []  # (event, verdict, partition)
        self.heartbeats: list[Heartbeat] = []
        self.chunks: list[ProgressChunk] = []
        self.seen_at: dict[str, float] = {}  # event id -> monotonic time the probe read it
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Probe:
        await self.log.start()
        self._tasks = [asyncio.create_task(self._follow_events()),
                       asyncio.create_task(self._follow(self.topics.heartbeats, self.heartbeats)),
                       asyncio.create_task(self._follow(self.topics.progress, self.chunks))]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.log.stop()

    async def _follow_events(self) -> None:
        async with aclosing(self.log.reader.read(self.topics.events, live=True)) as records:
            async for record in records:
                entry = entry_of(record)
                assert isinstance(entry, Recorded), entry
                verdict = self.ledger.apply(entry.event)
                async with self._changed:
                    self.events.append((entry.event, verdict, record.partition))
                    self.seen_at[entry.event.event_id] = time.monotonic()
                    self._changed.notify_all()

    async def _follow(self, topic: str, into: list) -> None:
        async with aclosing(self.log.reader.read(topic, live=True)) as records:
            async for record in records:
                async with self._changed:
                    into.append(decode_any(record.value))
                    self._changed.notify_all()

    async def append(self, *events: Event) -> None:
        await self.log.append(list(events))

    async def wait(self, predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
        """The first truthy value of predicate(), re-checked on every record read; fails after timeout."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                summary = "\n  ".join(f"{e.event_type} {e.task or ''} {e.agent or ''}: {v}" for e, v, _ in self.events)
                pytest.fail(f"no {what} within {timeout} s; the log holds:\n  {summary}")
        return predicate()

    def find(self, event_type: str, task: str | None = None, agent: str | None = None) -> list[tuple[Event, Verdict]]:
        return [(e, v) for e, v, _ in self.events if e.event_type == event_type
                and (task is None or e.task == task) and (agent is None or e.agent == agent)]

    async def outcome(self, task: str, *types: str) -> tuple[Event, Verdict]:
        """The first event of one of `types` about `task`, waiting for it."""
        found = await self.wait(lambda: [(e, v) for e, v, _ in self.events if e.task == task and e.event_type in types],
                                f"{' or '.join(types)} for task {task}")
        return found[0]


@asynccontextmanager
async def serving(agent: Agent, broker: Broker) -> AsyncIterator[asyncio.Task[None]]:
    """Run the agent until the block ends, then stop it and wait for it to drain."""
    run = asyncio.create_task(agent.run(broker.bootstrap, handle_signals=False))
    ready = asyncio.create_task(agent.ready.wait())
    await asyncio.wait({run, ready}, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
    if run.done():
        run.result()
    assert ready.done(), "agent not ready in time"
    try:
        yield run
    finally:
        agent.stop()
        await asyncio.wait_for(run, DEADLINE)


def new_agent(topics: TopicNames, broker: Broker, agent_id: str = "agent-1", **kwargs: Any) -> Agent:
    kwargs.setdefault("queues", {"emails": 2})
    kwargs.setdefault("heartbeat_interval", 0.2)
    kwargs.setdefault("drain_timeout", 2.0)
    return Agent(agent_id, topics=topics, tansu=broker.is_tansu, **kwargs)


async def test_agent_joins_heartbeats_and_completes_an_assignment(broker: Broker, topics: TopicNames) -> None:
    agent = new_agent(topics, broker, queues={"emails": 2, "reports": 1}, labels={"region": "eu"},
                      capabilities=["smtp"])

    @agent.handler("send")
    async def send(task: TaskContext) -> dict:
        return {"sent_to": task.payload["to"], "attempt": task.attempt}

    async with Probe(broker, topics) as probe, serving(agent, broker):
        joins = await probe.wait(lambda: len(probe.find("AgentJoined", agent="agent-1")) == 2 and
                                 probe.find("AgentJoined", agent="agent-1"), "AgentJoined for both queues")
        assert {(e.queue, e.slots, tuple(e.capabilities)) for e, _ in joins} == {
            ("emails", 2, ("smtp",)), ("reports", 1, ("smtp",))}
        count = len(await probe.log.reader.partitions(topics.events))
        for queue in ("emails", "reports"):
            partition = next(p for e, _, p in probe.events if e.event_type == "AgentJoined" and e.queue == queue)
            assert partition == queue_partition(queue, count), f"AgentJoined of {queue} is not keyed by its queue"
        beats = await probe.wait(lambda: len(probe.heartbeats) >= 2 and probe.heartbeats, "two heartbeats")
        assert beats[0].agent_id == "agent-1" and beats[0].slots == {"emails": 2, "reports": 1}
        assert not beats[0].draining

        e = Events(queue="emails", seed="t1")
        await probe.append(e.submit("t1", task_type="send", payload='{"to": "ada@example.com"}'))
        await probe.append(e.assign("t1", "agent-1", at=now_ms()))
        completed, verdict = await probe.outcome("t1", "TaskCompleted", "TaskFailed")
        agent.stop()
        lefts = await probe.wait(lambda: len(probe.find("AgentLeft")) == 2 and probe.find("AgentLeft"), "AgentLeft")

    assert completed.event_type == "TaskCompleted" and verdict.accepted, (completed, verdict)
    assert json.loads(completed.result) == {"sent_to": "ada@example.com", "attempt": 1}
    (started, start_verdict), = probe.find("TaskStarted", task="t1")
    assert start_verdict.accepted and started.attempt == 1
    key = AttemptKey("emails", "t1", 1)
    assert (started.event_id, completed.event_id) == (report_id(key, STARTED), report_id(key, OUTCOME))
    assigned, _ = probe.find("TaskAssigned", task="t1")[0]
    latency = started.occurred_at - assigned.occurred_at
    print(f"\nassignment -> TaskStarted: {latency} ms; assignment -> TaskCompleted: "
          f"{completed.occurred_at - assigned.occurred_at} ms")
    assert probe.ledger.state("emails").task("t1").state == TaskState.completed
    assert sorted(e.queue for e, v in lefts if v.accepted) == ["emails", "reports"]


async def test_failures_are_reported_never_fatal(broker: Broker, topics: TopicNames) -> None:
    agent = new_agent(topics, broker, queues={"emails": 3})

    @agent.handler("boom")
    async def boom(task: TaskContext) -> None:
        raise ValueError(f"boom {task.payload}")

    @agent.handler("bad-input")
    async def bad_input(task: TaskContext) -> None:
        raise NonRetryable("recipient missing")

    async with Probe(broker, topics) as probe, serving(agent, broker):
        e = Events(queue="emails", seed="fail")
        await probe.append(e.submit("t1", task_type="boom", payload="42"), e.submit("t2", task_type="bad-input"),
                           e.submit("t3", task_type="nobody-handles-this"))
        await probe.append(e.assign("t1", "agent-1"), e.assign("t2", "agent-1"), e.assign("t3", "agent-1"))
        failures = {task: await probe.outcome(task, "TaskFailed", "TaskCompleted") for task in ("t1", "t2", "t3")}

    for task, (event, verdict) in failures.items():
        assert event.event_type == "TaskFailed" and verdict.accepted, (task, event, verdict)
    assert failures["t1"][0].error == "ValueError: boom 42" and failures["t1"][0].retryable
    assert failures["t2"][0].error == "NonRetryable: recipient missing" and not failures["t2"][0].retryable
    assert "'nobody-handles-this'" in failures["t3"][0].error and not failures["t3"][0].retryable
    state = probe.ledger.state("emails")
    assert state.task("t1").state == TaskState.retry_wait
    assert state.task("t2").state == state.task("t3").state == TaskState.dead_lettered
    assert agent.stats["failed"] == 3


async def test_an_attempt_whose_start_could_not_be_appended_runs_again_at_the_next_heartbeat(
        broker: Broker, topics: TopicNames, monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent holds the attempt in the log but runs nothing: without reconciliation its
    # heartbeats would renew the lease forever and the task would never move.
    agent = new_agent(topics, broker, queues={"emails": 1})
    runs: list[int] = []

    @agent.handler("send")
    async def send(task: TaskContext) -> str:
        runs.append(task.attempt)
        return "sent"

    original = LogWriter.append
    failed: list[str] = []

    async def flaky_append(writer: LogWriter, topic: str, records: list[RawRecord], **kwargs: Any) -> Any:
        # The agent's first append holding a TaskStarted fails, as a broker gone away would.
        starts = [decode_any(r.value) for r in records if dict(r.headers).get("type") == b"TaskStarted"]
        if starts and not failed:
            failed.append(starts[0].event_id)
            raise ConnectionError("broker unreachable (injected)")
        return await original(writer, topic, records, **kwargs)

    monkeypatch.setattr(LogWriter, "append", flaky_append)
    async with Probe(broker, topics) as probe, serving(agent, broker):
        e = Events(queue="emails", seed="reconcile")
        await probe.append(e.submit("t1", task_type="send"), e.assign("t1", "agent-1", at=now_ms()))
        completed, verdict = await probe.outcome("t1", "TaskCompleted", "TaskFailed")

    assert failed, "the injected failure never happened"
    assert completed.event_type == "TaskCompleted" and verdict.accepted, (completed, verdict)
    # The handler ran while the start was in flight; with the start lost, its outcome was
    # not reported, and the attempt ran again (at least once, never reported twice).
    assert runs == [1, 1] and agent.stats["reconciled"] == 1 and agent.stats["report_errors"] == 1
    (started, start_verdict), = probe.find("TaskStarted", task="t1")
    assert start_verdict.accepted and started.event_id == failed[0]  # the same derived id, appended once


async def test_an_agent_declared_lost_while_alive_joins_again_and_takes_work(broker: Broker, topics: TopicNames) -> None:
    agent = new_agent(topics, broker, queues={"emails": 1})

    @agent.handler("send")
    async def send(task: TaskContext) -> str:
        return "sent"

    async with Probe(broker, topics) as probe, serving(agent, broker):
        e = Events(queue="emails", seed="lost")
        await probe.append(e.leave("agent-1", reason="lost"))  # what a scheduler with a stale view writes
        await probe.wait(lambda: len([v for _, v in probe.find("AgentJoined", agent="agent-1") if v.accepted]) == 2,
                         "a second accepted AgentJoined")
        assert probe.ledger.state("emails").member("agent-1").active
        await probe.append(e.submit("t1", task_type="send"), e.assign("t1", "agent-1", at=now_ms()))
        completed, verdict = await probe.outcome("t1", "TaskCompleted", "TaskFailed")

    assert completed.event_type == "TaskCompleted" and verdict.accepted, (completed, verdict)
    assert agent.stats["rejoined"] == 1


async def test_runs_only_accepted_assignments_to_itself(broker: Broker, topics: TopicNames) -> None:
    agent = new_agent(topics, broker, queues={"emails": 1})
    release = asyncio.Event()
    ran: list[str] = []

    @agent.handler("work")
    async def work(task: TaskContext) -> None:
        ran.append(task.task_id)
        await release.wait()

    async with Probe(broker, topics) as probe, serving(agent, broker):
        e = Events(queue="emails", seed="only")
        await probe.append(e.join("agent-2", slots=5), *(e.submit(t, task_type="work") for t in ("a", "b", "c", "d")))
        # a: ours; b: another agent's; c: beyond our one slot (the fold rejects it).
        await probe.append(e.assign("a", "agent-1"), e.assign("b", "agent-2"), e.assign("c", "agent-1"))
        await probe.wait(lambda: probe.find("TaskStarted", task="a"), "TaskStarted for a")
        (_, rejected), = probe.find("TaskAssigned", task="c")
        assert rejected.outcome == "rejected" and "slots" in rejected.reason
        release.set()
        await probe.outcome("a", "TaskCompleted")
        # Once the slot is free again, the next assignment runs: everything before it was seen and skipped.
        await probe.append(e.assign("d", "agent-1"))
        await probe.outcome("d", "TaskCompleted")

    assert ran == ["a", "d"]
    assert not probe.find("TaskStarted", task="b") and not probe.find("TaskStarted", task="c")


async def test_cancel_mid_run_is_acknowledged(broker: Broker, topics: TopicNames) -> None:
    agent = new_agent(topics, broker, queues={"emails": 2})
    saw_cancel: list[str] = []
    release = asyncio.Event()

    @agent.handler("forever")
    async def forever(task: TaskContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.append(task.task_id)
            raise

    @agent.handler("racer")
    async def racer(task: TaskContext) -> dict:
        await release.wait()
        return {"too": "late"}

    async with Probe(broker, topics) as probe, serving(agent, broker):
        e = Events(queue="emails", seed="cancel")
        await probe.append(e.submit("t1", task_type="forever"), e.submit("t2", task_type="racer"))
        await probe.append(e.assign("t1", "agent-1"), e.assign("t2", "agent-1"))
        await probe.wait(lambda: len(probe.find("TaskStarted")) == 2, "both started")
        await probe.append(e.cancel("t1", reason="user asked"))
        cancelled, verdict = await probe.outcome("t1", "TaskCancelled", "TaskCompleted", "TaskFailed")
        assert cancelled.event_type == "TaskCancelled" and verdict.accepted, (cancelled, verdict)
        assert saw_cancel == ["t1"]
        # t2 finishes right after its cancel request lands: log order decides; either the agent
        # stops it first, or its completion is rejected and it acknowledges the cancel after.
        await probe.append(e.cancel("t2"))
        release.set()
        cancelled2, verdict2 = await probe.outcome("t2", "TaskCancelled")
        assert verdict2.accepted

    assert all(not v.accepted for _, v in probe.find("TaskCompleted", task="t2"))
    state = probe.ledger.state("emails")
    assert state.task("t1").state == state.task("t2").state == TaskState.cancelled
    print(f"\nt2 completion rejected first: {bool(probe.find('TaskCompleted', task='t2'))}")


async def test_timeout_fails_the_attempt_retryably(broker: Broker, topics: TopicNames) -> None:
    agent = new_agent(topics, broker)
    stopped = asyncio.Event()

    @agent.handler("slow")
    async def slow(task: TaskContext) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async with Probe(broker, topics) as probe, serving(agent, broker):
        e = Events(queue="emails", seed="timeout")
        await probe.append(e.submit("t1", task_type="slow", timeout_ms=300), e.assign("t1", "agent-1"))
        failed, verdict = await probe.outcome("t1", "TaskFailed", "TaskCompleted")

    assert failed.event_type == "TaskFailed" and verdict.accepted
    assert failed.error == "timed out after 300 ms" and failed.retryable
    assert stopped.is_set()
    started, _ = probe.find("TaskStarted", task="t1")[0]
    assert failed.occurred_at - started.occurred_at >= 300


async def test_progress_chunks_arrive_in_order_before_the_outcome(broker: Broker, topics: TopicNames) -> None:
    agent = new_agent(topics, broker)

    @agent.handler("stream")
    async def stream(task: TaskContext) -> int:
        await task.progress("tool_call", {"tool": "search", "q": "x"})
        for i in range(30):
            await task.progress("text", f"token-{i}")
        await task.progress("message", "done")
        return 32

    async with Probe(broker, topics) as probe, serving(agent, broker):
        e = Events(queue="emails", seed="progress")
        await probe.append(e.submit("t1", task_type="stream"), e.assign("t1", "agent-1"))
        await probe.outcome("t1", "TaskCompleted")
        # Chunks are appended before the outcome: by the time the probe reads it, they are on the log.
        chunks = await probe.wait(lambda: len(probe.chunks) >= 32 and probe.chunks, "32 progress chunks")

    assert [c.seq for c in chunks] == list(range(32))
    assert [c.kind.value for c in chunks] == ["tool_call"] + ["text"] * 30 + ["message"]
    assert json.loads(chunks[0].content) == {"tool": "search", "q": "x"}
    assert [c.content for c in chunks[1:31]] == [f"token-{i}" for i in range(30)]
    assert {(c.task_id, c.attempt, c.agent_id, c.queue) for c in chunks} == {("t1", 1, "agent-1", "emails")}
    assert len({c.chunk_id for c in chunks}) == 32


async def test_drain_finishes_or_hands_back_work_and_leaves(broker: Broker, topics: TopicNames) -> None:
    agent = new_agent(topics, broker, queues={"emails": 3, "reports": 1}, drain_timeout=1.0)
    quick_release = asyncio.Event()

    @agent.handler("quick")
    async def quick(task: TaskContext) -> str:
        await quick_release.wait()
        return "finished while draining"

    @agent.handler("stuck")
    async def stuck(task: TaskContext) -> None:
        await asyncio.Event().wait()

    async with Probe(broker, topics) as probe:
        run = asyncio.create_task(agent.run(broker.bootstrap, handle_signals=False))
        await asyncio.wait_for(agent.ready.wait(), DEADLINE)
        e = Events(queue="emails", seed="drain")
        await probe.append(e.submit("q", task_type="quick"), e.submit("s", task_type="stuck"),
                           e.submit("late", task_type="quick"))
        await probe.append(e.assign("q", "agent-1"), e.assign("s", "agent-1"))
        await probe.wait(lambda: len(probe.find("TaskStarted")) == 2, "both started")
        agent.stop()
        await probe.wait(lambda: any(b.draining for b in probe.heartbeats), "a draining heartbeat")
        # Work assigned while draining is handed back without running.
        await probe.append(e.assign("late", "agent-1"))
        late, late_verdict = await probe.outcome("late", "TaskFailed", "TaskStarted")
        quick_release.set()
        await asyncio.wait_for(run, DEADLINE)
        await probe.wait(lambda: len(probe.find("AgentLeft")) == 2, "AgentLeft for both queues")

    assert late.event_type == "TaskFailed" and late_verdict.accepted and late.retryable
    assert "draining" in late.error
    (done, verdict), = probe.find("TaskCompleted", task="q")
    assert verdict.accepted and json.loads(done.result) == "finished while draining"
    (handed, verdict), = probe.find("TaskFailed", task="s")
    assert verdict.accepted and handed.retryable and "draining" in handed.error
    lefts = probe.find("AgentLeft", agent="agent-1")
    assert sorted(ev.queue for ev, v in lefts if v.accepted and ev.reason.value == "drained") == ["emails", "reports"]
    for queue in ("emails", "reports"):  # nothing from the agent after it left
        assert [ev for ev, _, _ in probe.events if ev.queue == queue][-1].event_type == "AgentLeft"
    seat = probe.ledger.state("emails").member("agent-1")
    assert not seat.active and not seat.holding
    first_draining = next(i for i, b in enumerate(probe.heartbeats) if b.draining)
    assert all(b.draining for b in probe.heartbeats[first_draining:])
    assert run.done()  # and with it the heartbeat loop


async def test_concurrency_never_exceeds_slots(broker: Broker, topics: TopicNames) -> None:
    agent = new_agent(topics, broker, queues={"emails": 2})
    running, peak = 0, 0

    @agent.handler("work")
    async def work(task: TaskContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)  # the work itself, not synchronisation
        running -= 1

    tasks = [f"t{i}" for i in range(8)]
    async with Probe(broker, topics) as probe, serving(agent, broker):
        e = Events(queue="emails", seed="slots")
        await probe.append(*(e.submit(t, task_type="work") for t in tasks))
        await probe.wait(lambda: len(probe.find("TaskSubmitted")) == 8 and probe.find("AgentJoined"), "the submits")
        # Play a greedy scheduler that assigns one task more than the fold shows free slots for.
        while not all(probe.ledger.state("emails").task(t).state == TaskState.completed for t in tasks):
            state = probe.ledger.state("emails")
            free = 2 - len(state.member("agent-1").holding)
            waiting = [t for t in tasks if state.task(t).state == TaskState.queued]
            if free > 0 and waiting:
                batch = waiting[: free + 1]
                before = len(probe.find("TaskAssigned"))
                await probe.append(*(e.assign(t, "agent-1") for t in batch))
                await probe.wait(lambda: len(probe.find("TaskAssigned")) >= before + len(batch), "assignments")
            else:
                done = len(probe.find("TaskCompleted"))
                await probe.wait(lambda: len(probe.find("TaskCompleted")) > done, "a completion")

    assert peak == 2
    rejected = [v for _, v in probe.find("TaskAssigned") if not v.accepted]
    assert rejected and all("slots" in v.reason for v in rejected)
    assert len([v for _, v in probe.find("TaskStarted") if v.accepted]) == 8


async def test_restarted_agent_resumes_held_attempts_with_the_same_report_ids(broker: Broker, topics: TopicNames) -> None:
    first = new_agent(topics, broker)
    gate = asyncio.Event()

    @first.handler("job")
    async def crash_midway(task: TaskContext) -> None:
        await gate.wait()

    async with Probe(broker, topics) as probe:
        run = asyncio.create_task(first.run(broker.bootstrap, handle_signals=False))
        await asyncio.wait_for(first.ready.wait(), DEADLINE)
        e = Events(queue="emails", seed="restart")
        await probe.append(e.submit("t1", task_type="job"), e.assign("t1", "agent-1"))
        await probe.wait(lambda: probe.find("TaskStarted", task="t1"), "TaskStarted")
        run.cancel()  # a crash: no drain, no AgentLeft
        await asyncio.gather(run, return_exceptions=True)

        second = new_agent(topics, broker)

        @second.handler("job")
        async def finish(task: TaskContext) -> str:
            return "resumed"

        async with serving(second, broker):
            done, verdict = await probe.outcome("t1", "TaskCompleted")

    starts = probe.find("TaskStarted", task="t1")
    assert [v.outcome for _, v in starts] == ["accepted", "duplicate"]
    assert starts[0][0].event_id == starts[1][0].event_id
    assert verdict.accepted and json.loads(done.result) == "resumed"


async def test_demo_agent_cli_runs_the_demo_handlers_and_drains_on_sigterm(broker: Broker, topics: TopicNames) -> None:
    env = dict(os.environ, TASKFOLD_BOOTSTRAP=broker.bootstrap, TASKFOLD_TOPIC_PREFIX=topics.prefix,
               TASKFOLD_BROKER="tansu" if broker.is_tansu else "kafka")
    async with Probe(broker, topics) as probe:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "taskfold", "agent", "--demo", "--agent-id", "demo-1", "--queue", "demo=3",
            "--label", "zone=a", "--capability", "gpu", "--heartbeat-interval", "0.2",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            (joined, _), = await probe.wait(lambda: probe.find("AgentJoined", agent="demo-1"), "the demo agent's join")
            assert (joined.slots, joined.labels, joined.capabilities) == (3, {"zone": "a"}, ["gpu"])
            e = Events(queue="demo", seed="demo")
            await probe.append(e.submit("echo", task_type="echo", payload='{"hi": 1}'),
                               e.submit("stream", task_type="streaming", payload='{"chunks": 3, "delay_ms": 1}'),
                               e.submit("flaky", task_type="flaky", payload='{"p": 1.0}'))
            await probe.append(*(e.assign(t, "demo-1") for t in ("echo", "stream", "flaky")))
            echoed, _ = await probe.outcome("echo", "TaskCompleted")
            streamed, _ = await probe.outcome("stream", "TaskCompleted")
            flaked, _ = await probe.outcome("flaky", "TaskFailed")
            process.send_signal(signal.SIGTERM)
            await probe.wait(lambda: probe.find("AgentLeft", agent="demo-1"), "the demo agent's AgentLeft")
            _, stderr = await asyncio.wait_for(process.communicate(), DEADLINE)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert process.returncode == 0, stderr.decode()
    assert json.loads(echoed.result) == {"hi": 1}
    assert json.loads(streamed.result) == {"chunks": 7}
    assert [c.seq for c in probe.chunks if c.task_id == "stream"] == list(range(7))
    assert "flaky failure" in flaked.error and flaked.retryable
    assert "left its queues" in stderr.decode()


async def test_a_quick_attempts_start_and_outcome_land_in_one_batch(broker: Broker, topics: TopicNames) -> None:
    # A Tansu Fetch lists every batch of the partition: a quick attempt's two reports share one
    # produce (the report window), the start first, instead of the outcome waiting for its ack.
    agent = new_agent(topics, broker, queues={"emails": 1})

    @agent.handler("send")
    async def send(task: TaskContext) -> str:
        return "sent"

    async with Probe(broker, topics) as probe, serving(agent, broker):
        e = Events(queue="emails", seed="one-batch")
        await probe.append(e.submit("t1", task_type="send"), e.assign("t1", "agent-1", at=now_ms()))
        completed, verdict = await probe.outcome("t1", "TaskCompleted", "TaskFailed")
        count = len(await probe.log.reader.partitions(topics.events))
    assert completed.event_type == "TaskCompleted" and verdict.accepted, (completed, verdict)
    batches = await read_batches(broker.bootstrap, topics.events, queue_partition("emails", count))
    reports = [b.types for b in batches if "TaskStarted" in b.types or "TaskCompleted" in b.types]
    assert reports == [("TaskStarted", "TaskCompleted")], [b.types for b in batches]
