"""The agent's cycle against a real Coalescer with a scripted sink: a slot frees at the outcome's
submission, the next start goes after that outcome, and one refused append does not refuse
every later start of the held queue."""

from __future__ import annotations

import asyncio

from taskfold.agent import Agent, TaskContext
from taskfold.agent.decide import Run
from taskfold.core.events import Event
from taskfold.core.fold import fold
from taskfold.core.reports import AttemptKey
from taskfold.core.testing import Events
from taskfold.log.coalesce import Coalescer
from tests.unit.waiting import until



class ScriptedLog:
    """Stands in for EventLog.submit: a real Coalescer whose sink lands events or fails a round."""

    def __init__(self) -> None:
        self.landed: list[Event] = []
        self.fail_next = False
        self.coalescer: Coalescer[Event, int] = Coalescer(self._append_all, window_s=0.001)

    async def _append_all(self, events: list[Event]) -> list[int]:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("broker gone")
        self.landed += events
        return list(range(len(events)))

    def submit(self, events, *, after=None):  # noqa: ANN001, ANN201
        return self.coalescer.submit(events, after=after)


class NoProgress:
    async def flush(self) -> None:
        return None

    def put(self, *_: object) -> None:
        return None


def started(log: ScriptedLog) -> list[str]:
    return [e.task_id for e in log.landed if e.event_type == "TaskStarted"]


async def test_a_refused_start_does_not_refuse_the_starts_held_behind_it() -> None:
    e = Events()
    events = [e.join("a1", slots=1, prefetch=2)]
    for t in ("t0", "t1", "t2"):
        events += [e.submit(t, task_type="gated"), e.assign(t, "a1")]
    ledger, _ = fold(events)
    agent = Agent("a1", {"q": 1}, prefetch=2)
    log = agent._log = ScriptedLog()  # type: ignore[assignment]
    agent._progress = NoProgress()  # type: ignore[assignment]
    gates = {t: asyncio.Event() for t in ("t0", "t1", "t2")}

    @agent.handler("gated")
    async def gated(task: TaskContext) -> str:
        await gates[task.task_id].wait()
        return "ok"

    agent._act_all([Run(AttemptKey("q", t, 1), ledger.state("q").task(t)) for t in ("t0", "t1", "t2")])
    await until(lambda: started(log) == ["t0"], "t0's start landed")
    log.fail_next = True
    gates["t0"].set()  # t0's outcome and t1's start (after it) share the failing round
    await until(lambda: AttemptKey("q", "t1", 1) in agent._attempts and not log.fail_next, "the failed round")
    gates["t1"].set()  # t1's outcome is refused (its start was); t2's start must still land
    gates["t2"].set()
    await until(lambda: not agent._attempts and not agent._jobs, "every attempt done")
    assert started(log) == ["t0", "t2"], [(x.event_type, x.task_id) for x in log.landed]
    assert agent.stats["report_errors"] == 2  # t0's outcome, t1's outcome
