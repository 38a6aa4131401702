"""Appending a workflow: its node submits, in dependency order, in one append."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from taskfold.core.events import Event
from taskfold.workflows.spec import WorkflowSpec, dependency_order, parse_spec, workflow_events

if TYPE_CHECKING:  # `import taskfold.clients` must not load the Kafka client (taskfold.log does)
    from taskfold.log.records import Position


class Appender(Protocol):
    """What `submit_workflow` needs of an event log (`taskfold.log.eventlog.EventLog` is one)."""

    async def append(self, events: Sequence[Event]) -> list[Position]: ...


@dataclass(frozen=True)
class WorkflowAppended:
    """Where each node's submit landed: node name -> task id and position."""

    workflow_id: str
    tasks: dict[str, str]
    positions: dict[str, Position]


async def submit_workflow(log: Appender, spec: WorkflowSpec | dict[str, Any], *,
                          actor: str | None = None) -> WorkflowAppended:
    """Check the spec (InvalidRequest naming the nodes), then append every node's TaskSubmitted.

    Appending again (after a crash, or twice on purpose) is harmless: the nodes fold as
    duplicates, and the ones the first append missed are admitted.
    """
    spec = spec if isinstance(spec, WorkflowSpec) else parse_spec(spec)
    events = workflow_events(spec, actor=actor)
    positions = await log.append(events)
    order = [node.name for node in dependency_order(spec)[0]]  # the order workflow_events wrote them in
    return WorkflowAppended(spec.workflow_id, {n: e.task_id for n, e in zip(order, events, strict=True)},
                            dict(zip(order, positions, strict=True)))

