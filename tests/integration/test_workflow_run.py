"""A workflow on a real broker: 50 nodes over three queues (three partitions), two scheduler
workers (`python -m taskfold worker`), one SIGKILLed mid-run and restarted, and three SDK
agents, one per queue, whose handlers read their dependencies' results
(`await task.dependency_results()`), most of them from other queues.

From the log: every node completed, each start came after all its dependencies'
completions, each result was computed from the dependencies' results; a failing node in a
second workflow cancels its dependents (in other queues, transitively) naming the cause;
the audit (with `started-early`) passes; the workflows view shows the run and its
critical path. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from projections.rebuild import rebuild
from projections.store import Store
from projections.views import all_views
from projections.views.workflows import read_workflow
from taskfold.agent import Agent, NonRetryable, TaskContext
from taskfold.audit.logaudit import audit_log
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.events import Event, TaskCompleted, TaskStarted
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import EventLog, Recorded
from taskfold.core.policies import workflow_task_id
from taskfold.core.state import TaskState
from taskfold.workflows import WorkflowSpec, parse_spec, submit_workflow
from tests.integration.test_dependency_relay import three_queues
from tests.integration.test_worker import Agents, eventually, workers

pytestmark = pytest.mark.integration

NODES = 50


def big_dag(queues: list[str]) -> WorkflowSpec:
    """50 nodes, node i in queue i % 3, each waiting on up to three earlier nodes (seeded)."""
    pick = random.Random(15)
    nodes = []
    for i in range(NODES):
        deps = sorted({f"n{j}" for j in pick.sample(range(i), min(i, pick.randint(1, 3)))}) if i else []
        nodes.append({"name": f"n{i}", "task_type": "step", "queue": queues[i % 3], "payload": {"node": f"n{i}"},
                      "depends_on": deps, "max_attempts": 5})
    return parse_spec({"workflow_id": "wf-big", "queue": queues[0], "nodes": nodes})


def failing(queues: list[str]) -> WorkflowSpec:
    """boom fails for good; after-boom (another queue) and after-after (a third) wait on it."""
    qa, qb, qc = queues
    return parse_spec({"workflow_id": "wf-boom", "queue": qa, "nodes": [
        {"name": "boom", "task_type": "boom", "max_attempts": 1},
        {"name": "after-boom", "task_type": "step", "queue": qb, "depends_on": ["boom"], "payload": {"node": "x"}},
        {"name": "after-after", "task_type": "step", "queue": qc, "depends_on": ["after-boom"]}]})


def expected_totals(spec: WorkflowSpec) -> dict[str, int]:
    """What each node's handler returns: 1 + the totals of its dependencies."""
    totals: dict[str, int] = {}
    for node in spec.nodes:  # earlier nodes first: dependencies are always earlier
        totals[node.name] = 1 + sum(totals[d] for d in node.depends_on)
    return totals


class Observer(Agents):
    """Folds the log live (runs nothing, beats for no one)."""

    async def _heartbeat(self) -> None:
        return None


def handlers(agent: Agent, spec: WorkflowSpec) -> None:
    wants = {node.name: set(node.depends_on) for node in spec.nodes}

    @agent.handler("step")
    async def step(task: TaskContext) -> dict[str, Any]:
        results = await task.dependency_results()
        name = task.payload["node"]
        if name in wants and set(results) != wants[name]:
            raise NonRetryable(f"{name} got results of {sorted(results)}, wants {sorted(wants[name])}")
        await asyncio.sleep(0.02)  # the work itself, so the kill lands while nodes run
        return {"node": name, "total": 1 + sum(r["total"] for r in results.values())}

    @agent.handler("boom")
    async def boom(task: TaskContext) -> None:
        raise NonRetryable("boom: the upstream file is missing")


@contextlib.asynccontextmanager
async def sdk_agents(broker: Broker, topics: TopicNames, queues: list[str],
                     spec: WorkflowSpec) -> AsyncIterator[list[Agent]]:
    fleet = [Agent(f"agent-{q}", {q: 4}, topics=topics, tansu=broker.is_tansu, heartbeat_interval=0.5,
                   drain_timeout=5.0) for q in queues]
    for agent in fleet:
        handlers(agent, spec)
    runs = [asyncio.create_task(agent.run(broker.bootstrap, handle_signals=False)) for agent in fleet]
    try:
        await asyncio.wait_for(asyncio.gather(*(a.ready.wait() for a in fleet)), 60)
        yield fleet
    finally:
        for agent in fleet:
            agent.stop()
        await asyncio.gather(*runs, return_exceptions=True)


async def test_a_50_node_workflow_over_three_queues_survives_a_killed_worker(
    broker: Broker, topics: TopicNames, tmp_path: Path,
) -> None:
    queues = three_queues()
    spec, bad = big_dag(queues), failing(queues)
    ids = {n.name: workflow_task_id(spec.workflow_id, n.name) for n in spec.nodes}
    home = {n.name: n.queue for n in spec.nodes}
    watch = Observer(broker, topics, set())
    await watch.start()
    try:
        with workers(broker, topics, tmp_path) as start:
            one, two = start(tmp_path / "one"), start(tmp_path / "two")
            await eventually(lambda: one.partitions() and two.partitions(), 60, "two workers holding partitions")
            async with sdk_agents(broker, topics, queues, spec) as fleet:
                def state(name: str) -> TaskState | None:
                    return watch.state(home[name], ids[name])

                done = lambda: sum(state(n) == TaskState.completed for n in ids)  # noqa: E731
                await submit_workflow(watch.log, spec)
                await submit_workflow(watch.log, bad)
                await eventually(lambda: done() >= 10, 60, "the first nodes done", lambda: f"{done()} done")
                one.kill()
                killed_at = done()
                one = start(tmp_path / "one")  # restarts from its local store
                took = await eventually(lambda: done() == NODES, 120, "every node completed",
                                        lambda: f"{done()} done; {watch.trace[-10:]}")
                bad_ids = {n.name: workflow_task_id(bad.workflow_id, n.name) for n in bad.nodes}
                bad_home = {n.name: n.queue or bad.queue for n in bad.nodes}
                bad_row = lambda n: watch.ledger.state(bad_home[n]).task(bad_ids[n])  # noqa: E731
                await eventually(lambda: all(bad_row(n) and bad_row(n).state.terminal for n in bad_ids), 60,
                                 "the failing workflow ended")
                reads = sum(a.results.counts["other_queue"] for a in fleet)
    finally:
        await watch.stop()

    rows = {n: watch.ledger.state(home[n]).task(ids[n]) for n in ids}
    totals = expected_totals(spec)
    assert {n: json.loads(r.result)["total"] for n, r in rows.items()} == totals
    assert_dependency_order(await accepted_events(broker, topics), spec, ids)
    assert bad_row("boom").state == TaskState.dead_lettered
    assert (bad_row("after-boom").state, bad_row("after-boom").reason) == (
        TaskState.cancelled, f"dependency {bad_ids['boom']} was dead_lettered")
    assert (bad_row("after-after").state, bad_row("after-after").reason) == (
        TaskState.cancelled, f"dependency {bad_ids['after-boom']} was cancelled")

    log = EventLog(broker.bootstrap, topics, tansu=broker.is_tansu)
    await log.start()
    try:
        audit = await audit_log(log, require_terminal=True)
    finally:
        await log.stop()
    assert audit.ok, audit.violations
    view = await workflow_view(broker, topics, tmp_path / "store")
    assert view["state"] == "completed" and view["states"] == {"completed": NODES}
    path = [step["node"] for step in view["critical_path"]["nodes"]]
    assert path[0] == "n0" and all(spec.nodes[int(b[1:])].depends_on.count(a) for a, b in zip(path, path[1:]))
    print(f"{NODES} nodes over {len(set(home.values()))} queues completed in dependency order; worker killed "
          f"after {killed_at} nodes, all done {took:.1f} s after; {reads} dependencies read from other queues; "
          f"critical path {len(path)} nodes, {view['critical_path']['total_ms']} ms")


async def accepted_events(broker: Broker, topics: TopicNames) -> list[Event]:
    """Every event of the log the fold accepts, each partition in log order."""
    ledger, out = Ledger(), []
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        async for entry in log.read():
            if isinstance(entry, Recorded) and ledger.apply(entry.event, entry.where).accepted:
                out.append(entry.event)
    return out


def assert_dependency_order(events: list[Event], spec: WorkflowSpec, ids: dict[str, str]) -> None:
    """Every accepted TaskStarted is stamped after all its dependencies' accepted TaskCompleted."""
    completed: dict[str, int] = {}
    started: dict[str, list[int]] = {}
    for event in events:
        if isinstance(event, TaskCompleted):
            completed[event.task_id] = event.occurred_at
        elif isinstance(event, TaskStarted):
            started.setdefault(event.task_id, []).append(event.occurred_at)
    for node in spec.nodes:
        starts = started.get(ids[node.name])
        assert starts, f"{node.name} never started"
        for dep in node.depends_on:
            assert completed[ids[dep]] <= min(starts), f"{node.name} started before {dep} completed"


async def workflow_view(broker: Broker, topics: TopicNames, path: Path) -> dict[str, Any]:
    await rebuild(broker.bootstrap, topics, path, all_views(), tansu=broker.is_tansu)
    store = Store(path, read_only=True)
    try:
        return read_workflow(store, "wf-big")
    finally:
        store.close()
