"""The agent's held attempts (prefetch): at most `slots` run, highest priority first then
arrival; one the log takes away is dropped unstarted; a drain hands the rest back uncharged."""

from __future__ import annotations

import asyncio

from taskfold.agent import Agent
from taskfold.agent.decide import Run, Stop
from taskfold.core.events import Priority, TaskFailed
from taskfold.core.fold import fold
from taskfold.core.reports import AttemptKey
from taskfold.core.testing import Events


def _agent_with_held(priorities: list[Priority]) -> tuple[Agent, list[AttemptKey], list]:
    e = Events()
    events = [e.join("a1", slots=1, prefetch=len(priorities))]
    for i, p in enumerate(priorities):
        events += [e.submit(f"t{i}", priority=p), e.assign(f"t{i}", "a1")]
    ledger, _ = fold(events)
    agent = Agent("a1", {"q": 1}, prefetch=len(priorities))
    started: list[AttemptKey] = []
    agent._start = lambda key, task, after=None: (started.append(key), agent._attempts.__setitem__(key, None))  # type: ignore[method-assign]
    state = ledger.state("q")
    agent._act_all([Run(AttemptKey("q", f"t{i}", 1), state.task(f"t{i}")) for i in range(len(priorities))])
    return agent, started, events


def test_runs_one_slot_at_a_time_highest_priority_first_then_fifo():
    agent, started, _ = _agent_with_held([Priority.low, Priority.high, Priority.low, Priority.high])
    # Runs read together start after all of them are held: the best of them takes the free slot.
    assert [k.task_id for k in started] == ["t1"]
    order = []
    while agent._attempts:
        key = next(iter(agent._attempts))
        order.append(key.task_id)
        agent._attempts.pop(key)
        agent._run_held("q")
    assert order == ["t1", "t3", "t0", "t2"]


def test_a_held_attempt_taken_away_is_dropped_unstarted():
    agent, started, _ = _agent_with_held([Priority.low, Priority.low])
    agent._act_all([Stop(AttemptKey("q", "t1", 1), "revoked")])
    agent._attempts.clear()
    agent._run_held("q")
    assert [k.task_id for k in started] == ["t0"]


def test_a_drain_hands_back_unstarted_attempts_uncharged():
    async def scenario() -> list:
        agent, _, events = _agent_with_held([Priority.low, Priority.low, Priority.low])
        appended: list = []

        async def report(event, counter):  # noqa: ANN001
            appended.append(event)
        agent._report = report  # type: ignore[method-assign]
        agent.draining = True
        agent._hand_back_held()
        await asyncio.gather(*agent._jobs)
        assert not agent._held
        return events + appended
    events = asyncio.run(scenario())
    backs = [e for e in events if isinstance(e, TaskFailed)]
    assert [b.task_id for b in backs] == ["t1", "t2"] and all(b.handed_back for b in backs)
    ledger, verdicts = fold(events)
    assert all(v.accepted for v in verdicts)
    assert [ledger.state("q").task(t).charged_attempts for t in ("t1", "t2")] == [0, 0]
