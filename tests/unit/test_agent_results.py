"""Dependency results for handlers: from the agent's own fold (keyed by node name for a
workflow), the queue of a dependency elsewhere learnt from the relay's DependencyResolved,
and a clear error when neither is known."""

from __future__ import annotations

import pytest

from taskfold.agent.results import DependencyResults, DependencyUnknown
from taskfold.core.events import DependencyResolved
from taskfold.core.fold import Ledger
from taskfold.core.state import ACCEPTED, rejected
from taskfold.core.testing import Events
from taskfold.workflows import parse_spec, workflow_events


def completed_workflow() -> tuple[Ledger, list]:
    spec = parse_spec({"workflow_id": "wf", "queue": "q", "nodes": [
        {"name": "a", "task_type": "t"}, {"name": "b", "task_type": "t", "depends_on": ["a"]}]})
    ledger, e = Ledger(), Events(queue="q", seed="r")
    submits = workflow_events(spec, occurred_at=1)
    for event in [*submits, e.join("ag", slots=2), e.assign(submits[0].task_id, "ag"), e.start(submits[0].task_id, "ag"),
                  e.complete(submits[0].task_id, "ag", result='{"rows": 3}')]:
        ledger.apply(event)
    return ledger, submits


async def test_a_dependency_in_the_agents_own_queue_gives_its_result_by_node_name() -> None:
    ledger, submits = completed_workflow()
    dependent = ledger.state("q").task(submits[1].task_id)
    assert await DependencyResults(ledger).of(dependent) == {"a": {"rows": 3}}


async def test_a_dependency_elsewhere_needs_the_relays_note_of_its_queue() -> None:
    ledger, e = Ledger(), Events(queue="q", seed="s")
    ledger.apply(e.submit("d", depends_on=["x"], dependencies_may_follow=True))
    results = DependencyResults(ledger)
    with pytest.raises(DependencyUnknown, match="dependency x is in no queue this agent folds"):
        await results.of(ledger.state("q").task("d"))
    note = DependencyResolved(event_id="r1", queue="q", occurred_at=2, actor="relay", causation_id="other/x",
                              task_id="d", dependency_id="x", outcome="satisfied")
    results.note(note, rejected("not waiting"))
    assert results.where == {}  # only an accepted resolution counts
    results.note(note, ACCEPTED)
    assert results.where == {"x": "other"}
    with pytest.raises(DependencyUnknown, match="dependency x is in queue other, and this agent has no log client"):
        await results.of(ledger.state("q").task("d"))
