"""The dependency relay on a real broker: three queues on three partitions, two scheduler
workers (`python -m taskfold worker`), one of them SIGKILLed mid-run and restarted.

The test plays the agents (the crew of test_worker.py): tasks named `fail-*` fail without
retry (so they are dead-lettered), every other task completes. Dependencies cross queues:
chains A -> B -> C, a dependency that completed before its dependent was submitted, a
dead-lettered one (its dependent is cancelled naming it, or runs anyway under
`on_dependency_failure: run`), and a task cancelled at admission whose waiter in another
queue is released. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskfold.broker.topics import queue_partition
from taskfold.audit.logaudit import audit_log
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.events import DependencyResolved, Event, TaskAssigned, TaskSubmitted
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import EventLog, Recorded
from taskfold.core.state import TaskState
from taskfold.core.testing import Events

from tests.conftest import TEST_PARTITIONS
from tests.integration.test_worker import Agents, eventually, workers

pytestmark = pytest.mark.integration

CHAINS = 12  # A -> B -> C chains submitted at once; the kill lands while they run


class Crew(Agents):
    """Completes what it is given, except `fail-*` tasks, which fail for good."""

    async def _run(self, assigned: TaskAssigned) -> None:
        if not assigned.task_id.startswith("fail-"):
            return await super()._run(assigned)
        e = Events(queue=assigned.queue, seed=uuid.uuid4().hex, now=int(time.time() * 1000))
        a = (assigned.task_id, assigned.agent_id, assigned.attempt)
        await self.log.append([e.start(*a), e.fail(*a, retryable=False, error="bounced")])


@contextlib.asynccontextmanager
async def crew_of(broker: Broker, topics: TopicNames) -> AsyncIterator[Crew]:
    crew = Crew(broker, topics, {"a1"})
    await crew.start()
    try:
        yield crew
    finally:
        await crew.stop()


def three_queues() -> list[str]:
    """Three queue names on three different partitions."""
    found: dict[int, str] = {}
    for n in range(1000):
        name = f"{'abc'[len(found)]}{n}"
        found.setdefault(queue_partition(name, TEST_PARTITIONS), name)
        if len(found) == 3:
            return list(found.values())
    raise AssertionError("no three queues on distinct partitions")


def cross_pairs(submitted: list[TaskSubmitted]) -> set[tuple[str, str]]:
    """(dependent, dependency) for every dependency that lives in another queue."""
    home = {s.task_id: s.queue for s in submitted}
    return {(s.task_id, d) for s in submitted for d in s.depends_on if home[d] != s.queue}


async def resolutions(broker: Broker, topics: TopicNames) -> tuple[Counter, Counter, list[str]]:
    """Fold the whole log: accepted and duplicate DependencyResolved per pair, and every rejection."""
    ledger, accepted, repeats, rejected = Ledger(), Counter(), Counter(), []
    log = EventLog(broker.bootstrap, topics, tansu=broker.is_tansu)
    await log.start()
    try:
        async for entry in log.read():
            if isinstance(entry, Recorded):
                verdict = ledger.apply(entry.event)
                if isinstance(entry.event, DependencyResolved):
                    pair = (entry.event.task_id, entry.event.dependency_id)
                    accepted[pair] += verdict.accepted
                    repeats[pair] += verdict.outcome == "duplicate"
                if verdict.outcome == "rejected":
                    rejected.append(f"{entry.event.event_type} {entry.event.task}: {verdict}")
    finally:
        await log.stop()
    return accepted, repeats, rejected


async def test_dependencies_cross_queues_partitions_and_a_killed_worker(
    broker: Broker, topics: TopicNames, tmp_path: Path,
) -> None:
    qa, qb, qc = three_queues()
    a, b, c = (Events(queue=q, seed=uuid.uuid4().hex, now=int(time.time() * 1000)) for q in (qa, qb, qc))
    run, follow = {"on_dependency_failure": "run"}, {"dependencies_may_follow": True}
    with workers(broker, topics, tmp_path) as start:
        one, two = start(tmp_path / "one"), start(tmp_path / "two")
        await eventually(lambda: one.partitions() and two.partitions(), 60, "two workers holding partitions")
        async with crew_of(broker, topics) as crew:
            submitted: list[TaskSubmitted] = []

            async def submit(*events: Event) -> None:
                submitted.extend(e for e in events if isinstance(e, TaskSubmitted))
                await crew.append(list(events))

            def state(queue: str, task: str) -> TaskState | None:
                return crew.state(queue, task)

            await crew.append([q.join("a1", slots=4) for q in (a, b, c)])
            # A dependency that ended before its dependent was submitted.
            await submit(a.submit("early"))
            await eventually(lambda: state(qa, "early") == TaskState.completed, 30, "early completed")
            await submit(b.submit("after-early", depends_on=["early"]))
            # Cancelled at admission (its dependency is cancelled), with a waiter in another queue.
            await submit(a.submit("waits-born-dead", depends_on=["born-dead"], **follow),
                         c.submit("gone", required_capabilities=["nobody"]), c.cancel("gone"),
                         c.submit("born-dead", depends_on=["gone"]))
            # A dead-lettered dependency: cancel (the default, transitively) or run anyway.
            await submit(b.submit("fail-x", max_attempts=1), c.submit("dep-cancel", depends_on=["fail-x"]),
                         a.submit("dep-cancel-2", depends_on=["dep-cancel"]),
                         a.submit("dep-run", depends_on=["fail-x"], **run))
            # Chains across the three queues, running while a worker is killed.
            await submit(*[e for n in range(CHAINS) for e in (
                a.submit(f"c{n}-1"), b.submit(f"c{n}-2", depends_on=[f"c{n}-1"]),
                c.submit(f"c{n}-3", depends_on=[f"c{n}-2", f"c{n}-1"]))])
            done_chains = lambda: sum(state(qc, f"c{n}-3") == TaskState.completed for n in range(CHAINS))  # noqa: E731
            await eventually(lambda: done_chains() >= 2, 30, "the first chains done")
            one.kill()
            killed_at = done_chains()
            one = start(tmp_path / "one")  # restarts from its local store

            expected = {s.task_id: (s.queue, TaskState.completed) for s in submitted}
            expected |= {"fail-x": (qb, TaskState.dead_lettered), "gone": (qc, TaskState.cancelled),
                         "born-dead": (qc, TaskState.cancelled), "waits-born-dead": (qa, TaskState.cancelled),
                         "dep-cancel": (qc, TaskState.cancelled), "dep-cancel-2": (qa, TaskState.cancelled)}
            ended = lambda: all(state(q, t) == want for t, (q, want) in expected.items())  # noqa: E731
            took = await eventually(ended, 60, "every task ended as expected", lambda: _open(crew, expected))
            reasons = {t: crew.ledger.state(q).task(t).reason for t, (q, _) in expected.items()}
    assert reasons["dep-cancel"] == "dependency fail-x was dead_lettered"
    assert reasons["dep-cancel-2"] == "dependency dep-cancel was cancelled"
    assert reasons["waits-born-dead"] == "dependency born-dead was cancelled"
    assert reasons["born-dead"] == "dependency gone was cancelled"

    accepted, repeats, rejected = await resolutions(broker, topics)
    assert accepted == Counter({pair: 1 for pair in cross_pairs(submitted)}), "a resolution was lost or repeated"
    assert not [r for r in rejected if r.startswith("DependencyResolved")], rejected
    log = EventLog(broker.bootstrap, topics, tansu=broker.is_tansu)
    await log.start()
    try:
        audit = await audit_log(log, require_terminal=True)
    finally:
        await log.stop()
    assert audit.ok, audit.violations
    print(f"{len(expected)} tasks, {len(accepted)} cross-queue resolutions, each accepted once; "
          f"{sum(repeats.values())} repeats folded as duplicates; killed after {killed_at} of {CHAINS} chains; "
          f"all ended {took:.1f} s after the kill; other rejections: {len(rejected)}")


def _open(crew: Crew, expected: dict[str, tuple[str, TaskState]]) -> str:
    wrong = {t: f"{crew.state(q, t)}" for t, (q, want) in expected.items() if crew.state(q, t) != want}
    return f"not as expected: {dict(list(wrong.items())[:10])}; last log: {crew.trace[-10:]}"
