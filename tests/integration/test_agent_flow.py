"""The agent's cycle on the real broker (issue 12): a slot frees when its outcome is handed to
the log, so the next held attempt's start shares the outcome's produce, and the log still
never shows a slot running twice."""

from __future__ import annotations

import pytest

from taskfold.agent import TaskContext, queue_partition
from taskfold.audit.invariants import audit
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.edge import now_ms
from taskfold.core.testing import Events
from taskfold.log.batches import read_batches

from tests.integration.test_agent_sdk import Probe, new_agent, serving

pytestmark = pytest.mark.integration
TASKS = 4


async def test_a_freed_slot_starts_the_next_held_attempt_in_the_outcomes_produce(
        broker: Broker, topics: TopicNames) -> None:
    agent = new_agent(topics, broker, queues={"flow": 1}, prefetch=TASKS - 1)
    ran: list[str] = []

    @agent.handler("quick")
    async def quick(task: TaskContext) -> str:
        ran.append(task.task_id)
        return "done"

    ids = [f"t{n}" for n in range(TASKS)]
    async with Probe(broker, topics) as probe, serving(agent, broker):
        e = Events(queue="flow", seed="flow")
        await probe.append(*(e.submit(t, task_type="quick") for t in ids))
        # All held at once (1 slot + prefetch): the slot runs them one after another.
        await probe.append(*(e.assign(t, "agent-1", at=now_ms()) for t in ids))
        for t in ids:
            await probe.outcome(t, "TaskCompleted")
        count = len(await probe.log.reader.partitions(topics.events))
        entries = [(event, verdict) for event, verdict, _ in probe.events]
    assert sorted(ran) == ids, "each held attempt ran once"
    batches = await read_batches(broker.bootstrap, topics.events, queue_partition("flow", count))
    reports = [b.types for b in batches if "TaskStarted" in b.types or "TaskCompleted" in b.types]
    # Waiting for each outcome's ack before the next start gives one (start, outcome) batch per task.
    handed_on = sum(1 for types in reports for a, b in zip(types, types[1:]) if (a, b) == ("TaskCompleted", "TaskStarted"))
    assert handed_on >= 1 and len(reports) < TASKS, reports
    report = audit(entries, probe.ledger)
    assert report.ok, [str(v) for v in report.violations[:10]]
