"""Dependency rules of the fold: failure propagation, `on_dependency_failure: run`, and a
task cancelled at admission releasing its waiters (issue 10, item 1)."""

from __future__ import annotations

import pytest

from taskfold.core.fold import fold
from taskfold.core.foldrows import decode, encode
from taskfold.core.state import Task, TaskState
from taskfold.core.testing import Events

CANCEL, RUN = {}, {"on_dependency_failure": "run"}
FOLLOW = {"dependencies_may_follow": True}


def _dead(e: Events, task: str) -> list:
    return [e.submit(task, max_attempts=1), e.assign(task, "a1"), e.fail(task, "a1", retryable=False)]


def _cancelled(e: Events, task: str) -> list:
    return [e.submit(task), e.cancel(task)]


def _completed(e: Events, task: str) -> list:
    return [e.submit(task), e.assign(task, "a1"), e.complete(task, "a1")]


ENDS = {"dead_lettered": _dead, "cancelled": _cancelled, "completed": _completed}


def _run(events: list) -> dict[str, Task]:
    ledger, verdicts = fold(events)
    assert all(v.outcome != "rejected" for v in verdicts), verdicts
    return dict(ledger.state("q").tasks)


# (dependency's end, dependent's policy, dependent's state, reason)
CASES = [
    ("completed", CANCEL, TaskState.queued, None),
    ("completed", RUN, TaskState.queued, None),
    ("dead_lettered", CANCEL, TaskState.cancelled, "dependency x was dead_lettered"),
    ("dead_lettered", RUN, TaskState.queued, None),
    ("cancelled", CANCEL, TaskState.cancelled, "dependency x was cancelled"),
    ("cancelled", RUN, TaskState.queued, None),
]


@pytest.mark.parametrize(("end", "policy", "expected", "reason"), CASES)
def test_a_dependency_that_ends_while_the_dependent_waits(end, policy, expected, reason) -> None:
    """settle_dependents: the dependency ends after the dependent was admitted."""
    e = Events()
    events = [e.join("a1"), e.submit("d", depends_on=["x"], **FOLLOW, **policy), *ENDS[end](e, "x")]
    d = _run(events)["d"]
    assert (d.state, d.reason) == (expected, reason)


@pytest.mark.parametrize(("end", "policy", "expected", "reason"), CASES)
def test_a_dependency_that_ended_before_the_dependent_was_submitted(end, policy, expected, reason) -> None:
    """_admit: the dependency is already terminal when the dependent arrives."""
    e = Events()
    d = _run([e.join("a1"), *ENDS[end](e, "x"), e.submit("d", depends_on=["x"], **policy)])["d"]
    assert (d.state, d.reason) == (expected, reason)


@pytest.mark.parametrize(("end", "policy", "expected", "reason"), CASES)
def test_a_dependency_relayed_from_another_queue(end, policy, expected, reason) -> None:
    """resolve_dependency: the outcome arrives as DependencyResolved, with the end state (v2)."""
    e = Events()
    outcome = "satisfied" if end == "completed" else "failed"
    events = [e.submit("d", depends_on=["x"], **FOLLOW, **policy),
              e.resolved("d", "x", outcome, dependency_state=end)]
    d = _run(events)["d"]
    assert (d.state, d.reason) == (expected, reason)


def test_a_v1_failed_resolution_without_the_end_state_still_names_the_dependency() -> None:
    e = Events()
    d = _run([e.submit("d", depends_on=["x"], **FOLLOW), e.resolved("d", "x", "failed")])["d"]
    assert (d.state, d.reason) == (TaskState.cancelled, "dependency x did not complete")


def test_failure_propagates_transitively_and_names_each_link() -> None:
    e = Events()
    events = [e.join("a1"), e.submit("b", depends_on=["a"], **FOLLOW), e.submit("c", depends_on=["b"]),
              e.submit("r", depends_on=["b"], **RUN), *_dead(e, "a")]
    tasks = _run(events)
    assert tasks["b"].reason == "dependency a was dead_lettered"
    assert tasks["c"].reason == "dependency b was cancelled"
    assert tasks["r"].state == TaskState.queued


@pytest.mark.parametrize(("policy", "expected"), [(CANCEL, TaskState.cancelled), (RUN, TaskState.queued)])
def test_a_task_cancelled_at_admission_releases_its_waiters(policy, expected) -> None:
    # "w" waits on "m" (may follow); "m" arrives depending on a cancelled task, so it is
    # cancelled at admission, and "w" must not stay blocked for good.
    e = Events()
    events = [e.submit("w", depends_on=["m"], **FOLLOW, **policy), *_cancelled(e, "gone"),
              e.submit("m", depends_on=["gone"])]
    tasks = _run(events)
    assert tasks["m"].state == TaskState.cancelled and tasks["m"].reason == "dependency gone was cancelled"
    assert tasks["w"].state == expected
    if expected == TaskState.cancelled:
        assert tasks["w"].reason == "dependency m was cancelled"


def test_a_second_resolution_with_the_same_event_id_is_a_duplicate() -> None:
    e = Events()
    resolved = e.resolved("d", "x", "satisfied")
    _, verdicts = fold([e.submit("d", depends_on=["x"], **FOLLOW), resolved, resolved])
    assert [v.outcome for v in verdicts] == ["accepted", "accepted", "duplicate"]


def test_old_task_rows_without_the_policy_fields_still_decode() -> None:
    e = Events()
    task = _run([e.submit("d", depends_on=["x"], **FOLLOW, **RUN)])["d"]
    raw = encode(task)
    assert decode(Task, raw) == task
    old = raw.replace(b',"on_dependency_failure":"run","dependencies_may_follow":true', b"")
    assert old != raw
    assert decode(Task, old).on_dependency_failure.value == "cancel"
