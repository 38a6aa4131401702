"""A workflow: a DAG of named nodes, each a task, possibly in different queues.

The spec a person writes (JSON or YAML, `WorkflowSpec`) is checked whole before anything
is appended: duplicate names, unknown node references and cycles are refused with the
nodes named. It expands deterministically into one `TaskSubmitted` (v2) per node, in
dependency order, each in its own queue:

* `task_id = uuid5(workflow_id, node)` (`policies.workflow_task_id`), the same as
  `WorkflowSubmitted` v1 gives, so a dependency names its task id in any queue, and a
  dependent in another queue learns the outcome through the dependency relay;
* `event_id` derived from (workflow_id, node): submitting the same workflow again folds
  every node as a duplicate;
* `correlation_id = workflow_id`, and `idempotency_key = "workflow:<id>:<node>"`: the
  mark (with the task id) by which readers know a task is that node of that workflow.

No new schema version is needed: TaskSubmitted v2 already carries everything.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from taskfold.core.edge import now_ms
from taskfold.core.requests import InvalidRequest, problems_of, submission
from taskfold.core.events import INT_MAX, LONG_MAX, Backoff, DependencyFailurePolicy, Priority, QueueName, TaskSubmitted
from taskfold.core.policies import derived_event_id, workflow_task_id

MAX_NODES = 1000  # a workflow is submitted whole, in one request
NAME_PATTERN = r"^[A-Za-z0-9._:-]+$"
NodeName = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]
WorkflowId = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]


class NodeSpec(BaseModel):
    """One node: a task, and the names of the nodes it waits for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: NodeName
    task_type: Annotated[str, Field(min_length=1, max_length=1024)]
    queue: QueueName | None = Field(default=None, description="default: the workflow's queue")
    payload: JsonValue = None
    depends_on: list[NodeName] = Field(default_factory=list, description="names of nodes of this workflow")
    priority: Priority = Priority.medium
    timeout_ms: Annotated[int, Field(gt=0, le=LONG_MAX)] = 300_000
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 3
    backoff: Backoff | None = None
    on_dependency_failure: DependencyFailurePolicy = DependencyFailurePolicy.cancel
    labels: dict[str, str] = Field(default_factory=dict)
    required_capabilities: list[str] = Field(default_factory=list)
    concurrency_key: str | None = None
    concurrency_limit: Annotated[int, Field(ge=1, le=INT_MAX)] = 1


class WorkflowSpec(BaseModel):
    """A workflow as submitted: its id, its default queue and its nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow_id: WorkflowId
    queue: QueueName
    nodes: list[NodeSpec] = Field(min_length=1, max_length=MAX_NODES)


def node_key(workflow_id: str, node: str) -> str:
    """The idempotency key that marks the task of a workflow node."""
    return f"workflow:{workflow_id}:{node}"


def node_of(task_id: str, correlation_id: str | None, idempotency_key: str | None) -> str | None:
    """The node name when these are the fields of a workflow node's task, else None."""
    if correlation_id is None or idempotency_key is None:
        return None
    prefix = f"workflow:{correlation_id}:"
    if not idempotency_key.startswith(prefix):
        return None
    node = idempotency_key[len(prefix):]
    return node if node and workflow_task_id(correlation_id, node) == task_id else None


def parse_spec(body: Any) -> WorkflowSpec:
    """The spec in a parsed JSON/YAML document, checked whole; InvalidRequest naming each problem."""
    try:
        spec = WorkflowSpec.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(problems_of(exc)) from None
    problems = graph_problems(spec)
    if problems:
        raise InvalidRequest(problems)
    return spec


def graph_problems(spec: WorkflowSpec) -> list[tuple[str, str]]:
    """Duplicate names, unknown or self references and cycles, as (field, reason) pairs."""
    problems: list[tuple[str, str]] = []
    first: dict[str, int] = {}
    for index, node in enumerate(spec.nodes):
        if node.name in first:
            problems.append((f"nodes.{index}.name", f"node {node.name!r} appears twice (nodes.{first[node.name]} "
                             f"and nodes.{index})"))
        first.setdefault(node.name, index)
    for index, node in enumerate(spec.nodes):
        for dep in node.depends_on:
            if dep == node.name:
                problems.append((f"nodes.{index}.depends_on", f"node {node.name!r} depends on itself"))
            elif dep not in first:
                problems.append((f"nodes.{index}.depends_on", f"node {node.name!r} depends on unknown node {dep!r}"))
    if problems:
        return problems
    _, cycle = dependency_order(spec)
    if cycle:
        return [("nodes", "dependency cycle: " + " -> ".join(cycle))]
    return []


def dependency_order(spec: WorkflowSpec) -> tuple[list[NodeSpec], list[str]]:
    """(nodes in dependency order, stable by position; a cycle as node names, first repeated last)."""
    by_name = {node.name: node for node in spec.nodes}
    placed: set[str] = set()
    order: list[NodeSpec] = []
    while len(order) < len(by_name):
        ready = [n for n in by_name.values() if n.name not in placed and set(n.depends_on) <= placed]
        if not ready:
            return order, _a_cycle(by_name, placed)
        placed.update(n.name for n in ready)
        order += ready
    return order, []


def _a_cycle(by_name: dict[str, NodeSpec], placed: set[str]) -> list[str]:
    # Every node left waits on another node left, so walking waits must come back round.
    path: list[str] = []
    name = min(n for n in by_name if n not in placed)
    while name not in path:
        path.append(name)
        name = min(d for d in by_name[name].depends_on if d not in placed)
    return path[path.index(name):] + [name]


def workflow_events(spec: WorkflowSpec, *, actor: str | None = None, occurred_at: int | None = None,
                    max_payload_bytes: int | None = None) -> list[TaskSubmitted]:
    """One TaskSubmitted per node, in dependency order; the same spec gives the same events but for the time."""
    order, cycle = dependency_order(spec)
    if cycle:
        raise InvalidRequest([("nodes", "dependency cycle: " + " -> ".join(cycle))])
    at = now_ms() if occurred_at is None else occurred_at
    index = {node.name: i for i, node in enumerate(spec.nodes)}
    return [_node_event(spec, node, index[node.name], at, actor, max_payload_bytes) for node in order]


def _node_event(spec: WorkflowSpec, node: NodeSpec, index: int, at: int, actor: str | None,
                limit: int | None) -> TaskSubmitted:
    wid = spec.workflow_id
    options = node.model_dump(include={"priority", "timeout_ms", "max_attempts", "on_dependency_failure",
                                       "labels", "required_capabilities", "concurrency_key", "concurrency_limit"})
    if node.backoff is not None:
        options["backoff"] = node.backoff
    try:
        payload = json.dumps(node.payload, allow_nan=False, separators=(",", ":"))
        return submission(
            node.queue or spec.queue, node.task_type, payload=payload, max_payload_bytes=limit,
            event_id=derived_event_id(json.dumps(["workflow", wid, node.name])), occurred_at=at, actor=actor,
            task_id=workflow_task_id(wid, node.name), depends_on=[workflow_task_id(wid, d) for d in node.depends_on],
            correlation_id=wid, causation_id=f"workflow:{wid}", idempotency_key=node_key(wid, node.name), **options)
    except ValueError as exc:
        problems = exc.problems if isinstance(exc, InvalidRequest) else [("payload", str(exc))]
        raise InvalidRequest([(f"nodes.{index}.{field}", reason) for field, reason in problems]) from None
