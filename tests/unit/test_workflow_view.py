"""The workflows view: node states across queues, the workflow's state and its critical path."""

from __future__ import annotations

from pathlib import Path

import pytest

from projections.views.workflows import critical_path, read_changes, read_workflow
from taskfold.core.events import WorkflowNode, WorkflowSubmitted
from taskfold.core.policies import workflow_task_id
from taskfold.core.testing import Events
from taskfold.workflows import parse_spec, workflow_events
from tests.unit.test_views import Log


@pytest.fixture
def log(tmp_path: Path):
    lg = Log(tmp_path / "store")
    yield lg
    lg.store.close()


def tid(node: str) -> str:
    return workflow_task_id("wf", node)


def submit(log: Log) -> None:
    spec = parse_spec({"workflow_id": "wf", "queue": "qa", "nodes": [
        {"name": "a", "task_type": "t"}, {"name": "b", "task_type": "t", "queue": "qb", "depends_on": ["a"]},
        {"name": "c", "task_type": "t", "depends_on": ["a"]},
        {"name": "d", "task_type": "t", "queue": "qb", "depends_on": ["b", "c"]}]})
    log.apply(*workflow_events(spec, occurred_at=1000))


def run(log: Log, node: str, e: Events, start: int, end: int) -> None:
    log.apply(e.join("ag", slots=4, at=start - 1), e.assign(tid(node), "ag", at=start - 1),
              e.start(tid(node), "ag", at=start), e.complete(tid(node), "ag", at=end))


def test_nodes_in_two_queues_make_one_workflow_and_the_critical_path_is_the_late_chain(log: Log) -> None:
    submit(log)
    view = read_workflow(log.store, "wf")
    assert view["node_count"] == 4 and view["state"] == "pending"
    assert {n["node"]: n["state"] for n in view["nodes"]} == {"a": "queued", "b": "blocked", "c": "blocked",
                                                                "d": "blocked"}
    qa, qb = Events(queue="qa", seed="qa"), Events(queue="qb", seed="qb")
    run(log, "a", qa, 1100, 1200)
    run(log, "c", qa, 1300, 1400)
    e = qb
    log.apply(e.resolved(tid("b"), tid("a"), at=1250), e.resolved(tid("d"), tid("c"), at=1450))
    run(log, "b", qb, 1500, 2000)
    view = read_workflow(log.store, "wf")
    assert view["state"] == "running"
    run(log, "d", qb, 2100, 2500)
    view = read_workflow(log.store, "wf")
    assert view["state"] == "completed" and view["states"] == {"completed": 4}
    assert [n["node"] for n in view["nodes"] if n["node"] == "d"][0] == "d"
    assert {n["node"]: n["depends_on"] for n in view["nodes"]}["d"] == ["b", "c"]
    path = view["critical_path"]
    assert [s["node"] for s in path["nodes"]] == ["a", "b", "d"]
    assert path["total_ms"] == 1500
    assert path["nodes"][1] == {"node": "b", "queue": "qb", "state": "completed", "waited_ms": 300, "ran_ms": 500}
    changes = read_changes(log.store, "wf")
    assert [(c["node"], c["state"]) for c in changes if c["node"] == "a"] == [
        ("a", "queued"), ("a", "assigned"), ("a", "running"), ("a", "completed")]


def test_a_cancelled_dependent_makes_the_workflow_failed_with_its_reason(log: Log) -> None:
    submit(log)
    e = Events(queue="qa", seed="fa")
    log.apply(e.join("ag", slots=4, at=1001), e.assign(tid("a"), "ag", at=1002), e.start(tid("a"), "ag", at=1003),
              e.fail(tid("a"), "ag", retryable=False, error="broken", at=1004), e.cancel(tid("c"), at=1005))
    b = Events(queue="qb", seed="fb")
    log.apply(b.resolved(tid("b"), tid("a"), outcome="failed", dependency_state="dead_lettered", at=1006),
              b.cancel(tid("d"), "upstream gone", at=1007))
    view = read_workflow(log.store, "wf")
    nodes = {n["node"]: n for n in view["nodes"]}
    assert view["state"] == "failed"
    assert nodes["a"]["state"] == "dead_lettered"
    assert nodes["b"]["state"] == "cancelled" and tid("a") in nodes["b"]["reason"]


def test_a_v1_workflow_is_read_with_its_node_names(log: Log) -> None:
    log.apply(WorkflowSubmitted(event_id="e1", queue="q", occurred_at=1, actor="t", workflow_id="w1", nodes=[
        WorkflowNode(node="x", task_type="t"), WorkflowNode(node="y", task_type="t", depends_on=["x"])]))
    view = read_workflow(log.store, "w1")
    assert {n["node"]: n["depends_on"] for n in view["nodes"]} == {"x": [], "y": ["x"]}


def test_the_critical_path_of_nothing_finished_is_empty() -> None:
    assert critical_path([{"task_id": "t", "node": "a", "depends_on": [], "submitted_at": 1, "started_at": None,
                           "finished_at": None}]) == {"nodes": [], "total_ms": None}
