"""Workflow specs: validation names the nodes, expansion is deterministic and folds once."""

from __future__ import annotations

import pytest

from taskfold.core.requests import InvalidRequest
from taskfold.core.fold import Ledger
from taskfold.core.policies import workflow_task_id
from taskfold.core.state import TaskState
from taskfold.workflows import node_of, parse_spec, workflow_events


def spec(*nodes: dict, queue: str = "q") -> dict:
    return {"workflow_id": "wf-1", "queue": queue, "nodes": list(nodes)}


def node(name: str, *deps: str, **extra) -> dict:
    return {"name": name, "task_type": "t", "depends_on": list(deps), **extra}


def refused(body: dict) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRequest) as caught:
        parse_spec(body)
    return caught.value.problems


def test_a_cycle_is_refused_naming_the_nodes_on_it():
    problems = refused(spec(node("a", "c"), node("b", "a"), node("c", "b"), node("d", "c")))
    assert problems == [("nodes", "dependency cycle: a -> c -> b -> a")]


def test_unknown_reference_and_duplicate_name_are_refused_naming_both():
    problems = refused(spec(node("a", "zz"), node("a"), node("b", "b")))
    assert ("nodes.1.name", "node 'a' appears twice (nodes.0 and nodes.1)") in problems
    assert ("nodes.0.depends_on", "node 'a' depends on unknown node 'zz'") in problems
    assert ("nodes.2.depends_on", "node 'b' depends on itself") in problems


def test_a_bad_field_names_the_node_index():
    problems = refused(spec(node("a", priority="urgent")))
    assert problems[0][0] == "nodes.0.priority"
    assert refused(spec(node("a b")))[0][0] == "nodes.0.name"


def test_expansion_is_in_dependency_order_with_derived_ids_across_queues():
    events = workflow_events(parse_spec(spec(node("c", "b", queue="q3"), node("b", "a", queue="q2"), node("a"))),
                             occurred_at=1)
    assert [e.queue for e in events] == ["q", "q2", "q3"]
    assert [e.task_id for e in events] == [workflow_task_id("wf-1", n) for n in "abc"]
    assert events[2].depends_on == [workflow_task_id("wf-1", "b")]
    assert {e.correlation_id for e in events} == {"wf-1"}
    assert [node_of(e.task_id, e.correlation_id, e.idempotency_key) for e in events] == ["a", "b", "c"]
    again = workflow_events(parse_spec(spec(node("c", "b", queue="q3"), node("b", "a", queue="q2"), node("a"))),
                            occurred_at=1)
    assert again == events


def test_node_of_needs_the_task_id_to_match():
    assert node_of("not-the-id", "wf-1", "workflow:wf-1:a") is None
    assert node_of(workflow_task_id("wf-1", "a"), "wf-2", "workflow:wf-1:a") is None


def test_submitting_twice_folds_as_duplicates_and_dependents_wait_then_run():
    body = spec(node("a"), node("b", "a"), node("c", "a", "b"))
    ledger = Ledger()
    first = [ledger.apply(e) for e in workflow_events(parse_spec(body), occurred_at=1)]
    second = [ledger.apply(e) for e in workflow_events(parse_spec(body), occurred_at=2)]
    assert [v.outcome for v in first] == ["accepted"] * 3
    assert [v.outcome for v in second] == ["duplicate"] * 3
    tasks = ledger.state("q").tasks
    assert tasks[workflow_task_id("wf-1", "a")].state == TaskState.queued
    assert tasks[workflow_task_id("wf-1", "c")].state == TaskState.blocked


def test_a_payload_over_the_limit_names_the_node():
    with pytest.raises(InvalidRequest) as caught:
        workflow_events(parse_spec(spec(node("a", payload="x" * 200))), max_payload_bytes=100)
    assert caught.value.problems[0][0] == "nodes.0.payload"
