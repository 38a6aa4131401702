"""`taskfold audit explain`: one task's story from the log, with the fold's verdict on each step.

The timeline presents the fold: it folds with the shared `Ledger` and shows what the fold
concluded. Alongside, the audit runs over the same events, so the explanation also says
which rules the task's events broke and, for a task that has not ended, what explains
that (or since when nothing does). An event is about the task when it names it, when it
is the workflow that created it, or when it is an AgentLeft of the agent that held the
task's attempt at that moment (leaving ends that attempt).

The scheduler's memory (`Fleet`) is replayed too, with a breaker policy like the workers'
(`QueuePolicy`), so a task that waits because every agent able to take it is quarantined
(or on probation) is explained by those agents: until when, and what tripped each breaker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from taskfold.audit.deadline import Standing, standing
from taskfold.audit.invariants import Auditor
from taskfold.audit.report import Violation, when
from taskfold.core.events import AgentLeft, Event, TaskAssigned, WorkflowSubmitted
from taskfold.core.fold import Ledger, Where
from taskfold.log.eventlog import Cut, EventLog, Poison
from taskfold.core.policies import workflow_task_id
from taskfold.core.scheduling.decide import match_problem
from taskfold.core.scheduling.fleet import observe, quarantined, record, trip_reason
from taskfold.core.scheduling.model import Fleet, QueuePolicy
from taskfold.core.state import WAITING, QueueState, Task, TaskState, Verdict

OnRead = Callable[[int], None]  # told how many more records were read

QUARANTINED = "every agent that can take it is quarantined or on probation"


@dataclass(frozen=True)
class HeldBack:
    """An agent able to take the task that its circuit breaker keeps away at the log's end."""

    agent_id: str
    until: int  # when its quarantine ends (or ended, for an agent on probation)
    trip: str  # what opened the breaker
    probe_task: str | None = None  # cooled down, but its probe task has not ended

    def __str__(self) -> str:
        if self.probe_task is not None:
            return (f"{self.agent_id} is on probation until its probe task {self.probe_task} ends "
                    f"(quarantined until {when(self.until)} after {self.trip})")
        return f"{self.agent_id} is quarantined until {when(self.until)} after {self.trip}"


def held_back(state: QueueState, fleet: Fleet, task: Task, end: int) -> tuple[list[HeldBack], bool]:
    """The active agents able to take `task` (slots aside) that their breaker keeps away at
    log time `end`, and whether that is every able agent (and there is at least one)."""
    able = [seat for _, seat in sorted(state.members.items()) if seat.active and match_problem(seat, task) is None]
    out = []
    for seat in able:
        agent = record(fleet, seat.agent_id)
        if agent.quarantined_until is None:
            continue
        trip = trip_reason(agent, when)
        if quarantined(agent, end):
            out.append(HeldBack(seat.agent_id, agent.quarantined_until, trip))
        elif agent.probe_task is not None:
            out.append(HeldBack(seat.agent_id, agent.quarantined_until, trip, agent.probe_task))
    return out, bool(able) and len(out) == len(able)


@dataclass(frozen=True)
class Moment:
    """One event in a task's timeline, with the fold's verdict and the task's state after it."""

    position: str
    event: Event
    verdict: Verdict
    state: str | None

    @property
    def decision(self) -> TaskAssigned | None:
        """The scheduler's decision, when this moment is an assignment."""
        return self.event if isinstance(self.event, TaskAssigned) else None


@dataclass
class Timeline:
    """Everything the log says about one task of one queue."""

    queue: str
    task_id: str
    moments: list[Moment] = field(default_factory=list)
    task: Task | None = None  # the fold's final state of it (None if never accepted)
    violations: list[Violation] = field(default_factory=list)  # rules its events broke
    standing: Standing | None = None  # why it has not ended (None when it has, or never began)
    held_back: list[HeldBack] = field(default_factory=list)  # able agents its breaker keeps away

    @property
    def decisions(self) -> list[Moment]:
        """The moments that are scheduler decisions (TaskAssigned), in log order."""
        return [m for m in self.moments if m.decision is not None]


class Explainer:
    """Folds events one at a time and keeps the ones about one task."""

    def __init__(self, task_id: str, queue: str | None = None, policy: QueuePolicy | None = None) -> None:
        self.task_id = task_id
        self.queue = queue
        self.policy = policy or QueuePolicy()
        self.fleets: dict[str, Fleet] = {}
        self.ledger = Ledger()
        self.auditor = Auditor()
        self.events = 0
        self._timelines: dict[str, Timeline] = {}

    def observe(self, event: Event, position: str, where: Where | None = None) -> None:
        """Fold one event (read at `where`, if known); keep it if it is about the task."""
        self.events += 1
        before = self.ledger.state(event.queue)
        about = self._about(event)
        verdict = self.ledger.apply(event, where)
        self.auditor.observe(event, verdict, position)
        self._remember(event, before, verdict)
        if not about:
            return
        task = self.ledger.state(event.queue).task(self.task_id)
        timeline = self._timelines.setdefault(event.queue, Timeline(event.queue, self.task_id))
        timeline.moments.append(Moment(position, event, verdict, task.state.value if task else None))

    def _remember(self, event: Event, before: QueueState, verdict: Verdict) -> None:
        """Fold the event into its queue's Fleet, as a worker's scheduler would."""
        fleet = self.fleets.get(event.queue) or Fleet()
        after = self.ledger.state(event.queue)
        self.fleets[event.queue] = observe(fleet, before, after, event, verdict, self.policy)

    def _about(self, event: Event) -> bool:
        if self.queue is not None and event.queue != self.queue:
            return False
        if event.task == self.task_id:
            return True
        if isinstance(event, WorkflowSubmitted):
            return any(workflow_task_id(event.workflow_id, n.node) == self.task_id for n in event.nodes)
        if isinstance(event, AgentLeft):
            task = self.ledger.state(event.queue).task(self.task_id)
            return task is not None and task.state.in_flight and task.agent_id == event.agent_id
        return False

    def timelines(self) -> list[Timeline]:
        """The task's timeline in each queue that mentions it (usually one)."""
        out = []
        books, end = self.auditor.books, self.auditor.report.end_ms or 0
        for queue, timeline in sorted(self._timelines.items()):
            timeline.task = self.ledger.state(queue).task(self.task_id)
            timeline.violations = [v for v in self.auditor.report.violations
                                   if v.queue == queue and v.task_id == self.task_id]
            book = books.task(queue, self.task_id)
            if book is not None and not book.state.terminal:
                timeline.standing = standing(books, book, end)
            if timeline.task is not None and timeline.task.state in WAITING - {TaskState.blocked}:
                self._breakers(timeline, end)
            out.append(timeline)
        return out

    def _breakers(self, timeline: Timeline, end: int) -> None:
        """List the able agents the breaker keeps away; if that is all of them, it explains the wait."""
        task = timeline.task
        assert task is not None
        timeline.held_back, everyone = held_back(
            self.ledger.state(timeline.queue), self.fleets.get(timeline.queue) or Fleet(), task, end)
        found = timeline.standing
        if everyone and (found is None or found.reason is None):
            ends = [h.until for h in timeline.held_back if h.probe_task is None]
            timeline.standing = Standing(QUARANTINED, until=min(ends) if ends else None)

    def queues(self) -> list[str]:
        """Every queue the log read has events of (for a helpful 'unknown task' message)."""
        return sorted(self.ledger.queues)


async def explain_log(log: EventLog, task_id: str, queue: str | None = None, cut: Cut | None = None,
                      progress: OnRead | None = None, policy: QueuePolicy | None = None) -> Explainer:
    """Read the log (or a cut of it) and gather everything about one task."""
    explainer = Explainer(task_id, queue, policy)
    read = 0
    async for entry in log.read(cut=cut):
        read += 1
        if progress is not None and read % 1000 == 0:
            progress(1000)
        if not isinstance(entry, Poison):
            explainer.observe(entry.event, str(entry.position), entry.where)
    if progress is not None:
        progress(read % 1000)
    return explainer
