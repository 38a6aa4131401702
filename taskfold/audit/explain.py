"""`taskfold audit explain`: one task's story from the log, with the fold's verdict on each step.

The timeline presents the fold: it folds with the shared `Ledger` and shows what the fold
concluded. Alongside, the audit runs over the same events, so the explanation also says
which rules the task's events broke and, for a task that has not ended, what explains
that (or since when nothing does). An event is about the task when it names it, when it
is the workflow that created it, or when it is an AgentLeft of the agent that held the
task's attempt at that moment (leaving ends that attempt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from taskfold.audit.deadline import Standing, standing
from taskfold.audit.invariants import Auditor
from taskfold.audit.report import Violation
from taskfold.events import AgentLeft, Event, TaskAssigned, WorkflowSubmitted
from taskfold.fold import Ledger, Where
from taskfold.log.eventlog import Cut, EventLog, Poison
from taskfold.policies import workflow_task_id
from taskfold.state import Task, Verdict

Progress = Callable[[int], None]


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

    @property
    def decisions(self) -> list[Moment]:
        """The moments that are scheduler decisions (TaskAssigned), in log order."""
        return [m for m in self.moments if m.decision is not None]


class Explainer:
    """Folds events one at a time and keeps the ones about one task."""

    def __init__(self, task_id: str, queue: str | None = None) -> None:
        self.task_id = task_id
        self.queue = queue
        self.ledger = Ledger()
        self.auditor = Auditor()
        self.events = 0
        self._timelines: dict[str, Timeline] = {}

    def observe(self, event: Event, position: str, where: Where | None = None) -> None:
        """Fold one event (read at `where`, if known); keep it if it is about the task."""
        self.events += 1
        about = self._about(event)
        verdict = self.ledger.apply(event, where)
        self.auditor.observe(event, verdict, position)
        if not about:
            return
        task = self.ledger.state(event.queue).task(self.task_id)
        timeline = self._timelines.setdefault(event.queue, Timeline(event.queue, self.task_id))
        timeline.moments.append(Moment(position, event, verdict, task.state.value if task else None))

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
            out.append(timeline)
        return out

    def queues(self) -> list[str]:
        """Every queue the log read has events of (for a helpful 'unknown task' message)."""
        return sorted(self.ledger.queues)


async def explain_log(log: EventLog, task_id: str, queue: str | None = None, cut: Cut | None = None,
                      progress: Progress | None = None) -> Explainer:
    """Read the log (or a cut of it) and gather everything about one task."""
    explainer = Explainer(task_id, queue)
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
