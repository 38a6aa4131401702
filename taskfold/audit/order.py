"""`started-early`: no task started before its dependencies ended (completed, or any end for a
task that runs anyway), judged at the end of the log.

A dependency may sit in another partition, and readers interleave partitions in any
order, so a start cannot be judged when it is read: its dependency's end may be read
later. At the end of the log every accepted start of a task with dependencies is
compared, in log time (`occurred_at`), with the end of each dependency as the books hold
it. The fold releases a dependent only after it learnt of the end (in its own partition,
from the same queue or through the relay), so a start stamped before that end, or with a
dependency that never ended, is a broken promise: a fold bug, or a start no assignment
allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskfold.audit.shadow import Books
from taskfold.audit.report import Violation, when
from taskfold.core.events import DependencyFailurePolicy, Event, TaskStarted, TaskSubmitted, WorkflowSubmitted
from taskfold.core.policies import workflow_task_id
from taskfold.core.state import TERMINAL, TaskState

RULE = "started-early"
DESCRIPTION = "a task started before one of its dependencies ended (completed, unless it runs anyway)"


@dataclass(frozen=True)
class Start:
    """An accepted TaskStarted of a task with dependencies."""

    queue: str
    task_id: str
    attempt: int
    agent_id: str
    at: int
    position: str | None


@dataclass
class StartOrder:
    """Keeps each task's dependencies and its accepted starts; `violations` judges them."""

    depends_on: dict[tuple[str, str], tuple[tuple[str, ...], bool]] = field(default_factory=dict)
    starts: list[Start] = field(default_factory=list)

    def observe(self, event: Event, position: str | None = None) -> None:
        """Take an accepted event (only submits and starts matter)."""
        match event:
            case TaskSubmitted() if event.depends_on:
                runs_anyway = event.on_dependency_failure == DependencyFailurePolicy.run
                self.depends_on.setdefault((event.queue, event.task_id), (tuple(event.depends_on), runs_anyway))
            case WorkflowSubmitted():
                for node in event.nodes:
                    deps = tuple(workflow_task_id(event.workflow_id, d) for d in node.depends_on)
                    if deps:
                        key = (event.queue, workflow_task_id(event.workflow_id, node.node))
                        self.depends_on.setdefault(key, (deps, False))
            case TaskStarted() if (event.queue, event.task_id) in self.depends_on:
                self.starts.append(Start(event.queue, event.task_id, event.attempt, event.agent_id,
                                         event.occurred_at, position))

    def violations(self, books: Books) -> list[Violation]:
        """One violation per task whose first start came before a dependency's end."""
        found, judged = [], set()
        for start in self.starts:
            if (start.queue, start.task_id) in judged:
                continue
            why = self._early(books, start)
            if why is not None:
                judged.add((start.queue, start.task_id))
                found.append(Violation(RULE, start.queue, f"task {start.task_id} started (attempt {start.attempt}, "
                                       f"by {start.agent_id}) at {when(start.at)}, but {why}", start.task_id,
                                       start.agent_id, start.position))
        return found

    def _early(self, books: Books, start: Start) -> str | None:
        deps, runs_anyway = self.depends_on[(start.queue, start.task_id)]
        for dep in deps:
            book = books.find(dep, start.queue)
            if book is None or book.state not in TERMINAL or book.finished_at is None:
                state = "is not known to any queue" if book is None else f"is {book.state.value}"
                return f"its dependency {dep} {state}"
            if book.state is not TaskState.completed and not runs_anyway:
                return f"its dependency {dep} ended {book.state.value}, not completed"
            if book.finished_at > start.at:
                return (f"its dependency {dep} (queue {book.queue}) ended {book.state.value} only at "
                        f"{when(book.finished_at)}")
        return None
