"""The workflows view: the state of each workflow and of each of its nodes, and their changes.

A task is a workflow node when its submit carries the workflow's marks
(`taskfold.workflows.node_of`), or when a `WorkflowSubmitted` (v1) created it. Nodes of
one workflow may live in several queues, so their submits reach the view in any order
across partitions: a node's `depends_on` is kept as task ids, and names are matched when
the workflow is read.

Tables (keys NUL-joined):
* `workflows`          workflow_id -> {workflow_id, submitted_at, nodes, states: {state: count}}
* `workflow_nodes`     workflow_id, node -> {node, task_id, queue, task_type, depends_on (task ids), state,
                       attempt, agent_id, submitted_at, started_at, finished_at, reason, error}
* `workflow_tasks`     queue, task_id -> {workflow_id, node}
* `workflow_changes`   workflow_id, partition:offset, node -> {position, node, task_id, queue, state, at, reason}:
                       one row per node state change, what the workflow's SSE stream sends
"""

from __future__ import annotations

from typing import Any

from projections.view import Change, Rows, Telemetry
from projections.views.viewrows import join
from taskfold.core.events import WorkflowSubmitted
from taskfold.core.policies import workflow_task_id
from taskfold.core.state import Task, TaskState
from taskfold.workflows.spec import node_of

WORKFLOWS = "workflows"
NODES = "workflow_nodes"
TASKS = "workflow_tasks"
CHANGES = "workflow_changes"

TRACKED = ("state", "attempt", "agent_id", "started_at", "finished_at", "reason", "error")


class WorkflowsView:
    """Workflows and their nodes, kept from the task rows each event changed."""

    name = "workflows"

    def apply(self, change: Change, rows: Rows) -> None:
        v1_nodes = _v1_nodes(change)
        for task in change.tasks:
            ref = rows.get(TASKS, join(task.queue, task.task_id))
            if ref is None:
                node = v1_nodes.get(task.task_id) or node_of(task.task_id, task.correlation_id, task.idempotency_key)
                if node is None:
                    continue
                wid = change.event.workflow_id if task.task_id in v1_nodes else task.correlation_id  # type: ignore[attr-defined]
                ref = {"workflow_id": wid, "node": node}
                rows.put(TASKS, join(task.queue, task.task_id), ref)
            _node_changed(rows, change, ref["workflow_id"], ref["node"], task)

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        """Workflows are made of events only."""


def _v1_nodes(change: Change) -> dict[str, str]:
    """task id -> node name of the tasks a WorkflowSubmitted (v1) created."""
    event = change.event
    if not isinstance(event, WorkflowSubmitted) or not change.verdict.accepted:
        return {}
    return {workflow_task_id(event.workflow_id, n.node): n.node for n in event.nodes}


def node_row(node: str, task: Task) -> dict[str, Any]:
    """A node as stored and served."""
    return {"node": node, "task_id": task.task_id, "queue": task.queue, "task_type": task.task_type,
            "depends_on": list(task.depends_on), "state": task.state.value, "attempt": task.attempt,
            "agent_id": task.agent_id, "submitted_at": task.submitted_at, "started_at": task.started_at,
            "finished_at": task.finished_at, "reason": task.reason, "error": task.error}


def _node_changed(rows: Rows, change: Change, wid: str, node: str, task: Task) -> None:
    key = join(wid, node)
    old = rows.get(NODES, key)
    new = node_row(node, task)
    if old is not None and all(old[f] == new[f] for f in TRACKED):
        return
    rows.put(NODES, key, new)
    summary = rows.get(WORKFLOWS, wid) or {"workflow_id": wid, "submitted_at": task.submitted_at, "nodes": 0,
                                           "states": {}}
    states = dict(summary["states"])
    if old is None:
        summary = {**summary, "nodes": summary["nodes"] + 1,
                   "submitted_at": min(summary["submitted_at"], task.submitted_at)}
    else:
        states[old["state"]] -= 1
    states[new["state"]] = states.get(new["state"], 0) + 1
    rows.put(WORKFLOWS, wid, {**summary, "states": {s: n for s, n in states.items() if n}})
    if old is None or old["state"] != new["state"]:
        rows.put(CHANGES, join(wid, change.key, node), {
            "position": change.position, "node": node, "task_id": task.task_id, "queue": task.queue,
            "state": new["state"], "at": change.event.occurred_at, "reason": task.reason})


def workflow_state(states: dict[str, int]) -> str:
    """completed, failed (every node ended, not all completed), running or pending."""
    total = sum(states.values())
    ended = sum(n for s, n in states.items() if TaskState(s).terminal)
    if ended == total:
        return "completed" if states.get("completed", 0) == total else "failed"
    busy = sum(states.get(s, 0) for s in ("assigned", "running", "retry_wait"))
    return "running" if busy or ended else "pending"


def critical_path(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The chain of nodes that decided when the workflow finished, with each one's wait and run.

    From the node that finished last, step to the dependency that finished last, until a
    node with none: shortening anything else would not have ended the workflow sooner.
    """
    by_task = {n["task_id"]: n for n in nodes}
    done = [n for n in nodes if n["finished_at"] is not None]
    if not done:
        return {"nodes": [], "total_ms": None}
    path = [max(done, key=lambda n: (n["finished_at"], n["node"]))]
    while True:
        deps = [by_task[d] for d in path[-1]["depends_on"] if d in by_task and by_task[d]["finished_at"] is not None]
        if not deps:
            break
        path.append(max(deps, key=lambda n: (n["finished_at"], n["node"])))
    path.reverse()
    steps, ready = [], min(n["submitted_at"] for n in nodes)
    for n in path:
        start = n["started_at"] if n["started_at"] is not None else n["finished_at"]
        steps.append({"node": n["node"], "queue": n["queue"], "state": n["state"],
                      "waited_ms": max(0, start - ready), "ran_ms": max(0, n["finished_at"] - start)})
        ready = n["finished_at"]
    return {"nodes": steps, "total_ms": path[-1]["finished_at"] - min(n["submitted_at"] for n in nodes)}


def read_workflow(store: Any, workflow_id: str) -> dict[str, Any] | None:
    """A workflow as served: its state, its nodes (dependencies by name) and its critical path; None if unknown."""
    summary = store.get(WORKFLOWS, workflow_id)
    if summary is None:
        return None
    nodes = [row for _, row in store.scan(NODES, join(workflow_id, ""))]
    names = {n["task_id"]: n["node"] for n in nodes}
    served = [{**n, "depends_on": [names.get(d, d) for d in n["depends_on"]]} for n in nodes]
    state = workflow_state(summary["states"])
    ended = state in ("completed", "failed")
    return {"workflow_id": workflow_id, "state": state, "submitted_at": summary["submitted_at"],
            "finished_at": max(n["finished_at"] or 0 for n in nodes) if ended else None,
            "node_count": summary["nodes"], "states": summary["states"], "nodes": served,
            "critical_path": critical_path(nodes)}


def read_changes(store: Any, workflow_id: str) -> list[dict[str, Any]]:
    """Every node state change of a workflow, each partition in log order, merged by time."""
    rows = [row for _, row in store.scan(CHANGES, join(workflow_id, ""))]
    return sorted(rows, key=lambda r: (r["at"], r["position"]))
