"""10,000 submits and a mix of later events go through the real log; replaying the log
gives exactly the states and verdicts of folding the same events in memory, and a
poison record in the middle is reported and skipped."""

from __future__ import annotations

import random

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.events import Event
from taskfold.core.fold import fold
from taskfold.log.eventlog import Cut, EventLog
from taskfold.log.records import RawRecord
from taskfold.log.foldlog import fold_log
from taskfold.core.state import TaskState
from taskfold.core.testing import Events

QUEUES = ["emails", "reports", "ml#0", "ml#1", "video"]


def workload(submits: int, seed: int = 11) -> list[Event]:
    """Submits spread over queues, then assignments, reports, faults, cancels and redeliveries."""
    rng = random.Random(seed)
    makers = {q: Events(queue=q, seed=q) for q in QUEUES}
    events: list[Event] = [makers[q].join(f"{q}-agent-{n}", slots=4) for q in QUEUES for n in range(2)]
    tasks = [(rng.choice(QUEUES), f"task-{i}") for i in range(submits)]
    for i, (queue, task) in enumerate(tasks):
        priority = rng.choice(["critical", "high", "medium", "low"])
        events.append(makers[queue].submit(task, priority=priority, idempotency_key=f"key-{i}"))
    for queue, task in tasks[: submits // 2]:
        e, agent = makers[queue], f"{queue}-agent-{rng.randrange(2)}"
        roll = rng.random()
        events.append(e.assign(task, agent))
        if roll < 0.6:
            events += [e.start(task, agent), e.complete(task, agent, result='{"ok": true}')]
        elif roll < 0.75:
            events += [e.start(task, agent), e.fail(task, agent, retryable=roll < 0.7)]
        elif roll < 0.85:
            events += [e.cancel(task), e.cancelled(task, agent)]
        else:
            events += [e.expire(task, agent), e.complete(task, agent)]  # a zombie's late report
    redelivered = rng.sample(events, 200)
    return events + redelivered


async def test_replay_of_the_log_equals_the_fold_in_memory(broker: Broker, topics: TopicNames) -> None:
    events = workload(10_000)
    half = len(events) // 2
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        await log.append(events[:half])
        poison = RawRecord(key="emails", value=b"\xc3\x01not-an-avro-fingerprint", headers=[("type", b"TaskSubmitted")])
        (poison_at,) = await log.writer.append(topics.events, [poison])
        await log.append(events[half:])

        replayed = await fold_log(log)

    expected, verdicts = fold(events)
    assert replayed.records == len(events) + 1
    assert [p.position for p in replayed.poison] == [poison_at]
    assert "fingerprint" in replayed.poison[0].reason
    assert replayed.ledger.queues == expected.queues
    outcomes = {v.outcome for v in verdicts}
    assert outcomes == {"accepted", "duplicate", "rejected"}
    assert sum(replayed.verdicts.values()) == len(events)
    states = {t.state for q in expected.queues.values() for t in q.tasks.values()}
    assert {TaskState.completed, TaskState.cancelled, TaskState.queued, TaskState.retry_wait} <= states


async def test_replay_as_of_a_time_folds_each_partition_up_to_that_moment(broker: Broker, topics: TopicNames) -> None:
    e = Events(queue="emails", now=10_000)
    early = [e.join("a1", slots=2), e.submit("t1"), e.submit("t2"), e.assign("t1", "a1")]
    late = [e.complete("t1", "a1", at=50_000), e.submit("t3", at=50_001)]
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        positions = await log.append(early + late)
        as_of = await fold_log(log, Cut(until_ms=20_000))
        by_offsets = await fold_log(log, Cut(offsets={positions[0].partition: positions[3].offset + 1}))

    expected, _ = fold(early)
    assert as_of.ledger.queues == expected.queues
    assert as_of.ledger.state("emails").task("t1").state == TaskState.assigned
    assert by_offsets.ledger.queues == expected.queues
