"""Assign ahead on the real broker (issue 12): strict priority against a full prefetch, and a
prefetched task whose start lease runs out runs once only."""

from __future__ import annotations

import pytest

from taskfold.audit.logaudit import audit_log
from taskfold.core.events import TaskAssigned, TaskCompleted, TaskStarted
from taskfold.core.state import TaskState

from tests.integration.test_e2e_scheduling import FAST, Run, run  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration


async def test_no_low_task_starts_on_an_agent_while_a_critical_one_waits_for_it(run: Run) -> None:  # noqa: F811
    run.cluster.worker("worker-1", *FAST)
    agents = ["p-1", "p-2"]
    for agent in agents:
        run.cluster.agent(agent, "-q", "adv=1", "--prefetch", "2")
    await run.agents_joined("adv", agents)
    warm = await run.warmed("adv", agents)
    # Fill every slot and prefetch (2 × (1 + 2)) with long low tasks, then submit criticals.
    await run.submit("adv", 6, "sleep", prefix="low", priority="low", payload='{"ms": 1500}')
    # ... and both slots' lows started: a start the agent had begun before it read a critical
    # assignment may land after it in the log (seen on a loaded machine), which is not an
    # inversion the agent could have avoided.
    def full(ledger) -> bool:  # noqa: ANN001
        tasks = ledger.state("adv").tasks.values()
        return sum(t.state.in_flight for t in tasks) == 6 and sum(t.state is TaskState.running for t in tasks) == 2

    await run.watcher.wait_for(full, 60, "every slot and prefetch held by a low task, one running on each agent")
    await run.submit("adv", 4, "sleep", prefix="crit", priority="critical", payload='{"ms": 2000}')
    await run.all_terminal("adv", 10 + len(warm), timeout=120)
    entries = [(e, v) for e, v in run.watcher.entries if e.queue == "adv" and v.accepted
               and getattr(e, "task_id", None) not in warm]
    for agent in agents:
        waiting: set[str] = set()  # critical tasks assigned to the agent and not started yet
        for event, _ in entries:
            if isinstance(event, TaskAssigned) and event.agent_id == agent and event.task_id.startswith("crit"):
                waiting.add(event.task_id)
            elif isinstance(event, TaskStarted) and event.agent_id == agent:
                assert not (event.task_id.startswith("low") and waiting), \
                    f"{event.task_id} started on {agent} while {sorted(waiting)} waited for it"
                waiting.discard(event.task_id)
    # Stronger, and what the one-over-the-bound rule is for: once the lows already running
    # when the criticals came are started, every critical starts before any other low.
    starts = [e.task_id for e, _ in entries if isinstance(e, TaskStarted)]
    assert all(t.startswith("low") for t in starts[:2]) and all(t.startswith("crit") for t in starts[2:6]), starts
    completed = {e.task_id for e in run.accepted(TaskCompleted)} - set(warm)
    assert len(completed) == 10
    run.audited()
    # The log's own audit, with positions, judges each start by what its agent had read.
    audit = await audit_log(run.log)
    assert [str(v) for v in audit.fold.violations] == []
    assert all(e.seen is not None for e in run.accepted(TaskStarted))


async def test_a_prefetched_task_whose_start_lease_expires_runs_once_only(run: Run) -> None:  # noqa: F811
    run.cluster.worker("worker-1", *FAST, "--start-within-ms", "1500")
    run.cluster.agent("slow", "-q", "exp=1", "--prefetch", "2")
    await run.agents_joined("exp", ["slow"])
    # A quick run time first, so the scheduler assigns ahead (then the long task makes it wrong).
    warm = await run.warmed("exp", ["slow"])
    await run.submit("exp", 1, "sleep", prefix="long", priority="critical", payload='{"ms": 2500}')
    await run.watcher.wait_for(lambda ledger: getattr(ledger.state("exp").task("long-0"), "state", None) == TaskState.running,
                               60, "the long task running")
    await run.submit("exp", 1, "echo", prefix="ahead", priority="low")
    # Held unstarted behind the long task past start_within_ms: the worker takes it back; it is
    # assigned again (only this agent serves the queue) and must still run exactly once.
    await run.all_terminal("exp", 2 + len(warm), timeout=90)
    assigned = [e for e in run.accepted(TaskAssigned) if e.task_id == "ahead-0"]
    started = [e for e in run.accepted(TaskStarted) if e.task_id == "ahead-0"]
    all_starts = [e for e, _ in run.watcher.entries if isinstance(e, TaskStarted) and e.task_id == "ahead-0"]
    assert len(assigned) >= 2, "the prefetched attempt lost its start lease and was assigned again"
    assert len(started) == 1 == len(all_starts), "it ran once only"
    assert run.watcher.ledger.state("exp").task("ahead-0").state == TaskState.completed
    run.audited()
