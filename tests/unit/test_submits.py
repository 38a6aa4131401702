"""What "the same request" means for an idempotency key, and which dependencies are unknown."""

from __future__ import annotations

import pytest

from taskfold.core.events import Backoff, TaskSubmitted
from taskfold.core.fold import Ledger
from taskfold.core.submits import conflict_reason, request_differences, unknown_dependencies


def submitted(**fields) -> TaskSubmitted:
    base = {"event_id": "e-1", "queue": "emails", "occurred_at": 1, "actor": "a", "task_id": "welcome-1",
            "task_type": "send", "payload": '{"to": "ada", "n": 1}', "idempotency_key": "signup-42"}
    return TaskSubmitted(**{**base, **fields})


def original():
    ledger = Ledger()
    ledger.apply(submitted(labels={"region": "eu"}, depends_on=["a", "b"], required_capabilities=["smtp"]))
    return ledger.state("emails").task("welcome-1")


SAME = {"labels": {"region": "eu"}, "depends_on": ["b", "a"], "required_capabilities": ["smtp"]}


@pytest.mark.parametrize("fields, given, expected", [
    ({}, True, []),
    ({"event_id": "e-2", "occurred_at": 99, "actor": "someone else"}, True, []),  # who and when never differ
    ({"payload": '{ "n": 1, "to": "ada" }'}, True, []),  # JSON values, not text
    ({"task_id": "welcome-2"}, False, []),  # a task id left to default is generated, not asked for
    ({"task_id": "welcome-2"}, True, ["task_id"]),
    ({"payload": '{"to": "bob", "n": 1}', "priority": "high"}, True, ["payload", "priority"]),
    ({"backoff": Backoff(initial_ms=5)}, True, ["backoff"]),
    ({"labels": {"region": "us"}}, True, ["labels"]),
    ({"depends_on": ["a"]}, True, ["depends_on"]),
    ({"session_id": "s"}, True, ["session_id"]),
])
def test_request_differences(fields, given, expected) -> None:
    event = submitted(**{**SAME, **fields})
    assert request_differences(event, original(), task_id_given=given) == expected
    assert request_differences(event, submitted(**SAME), task_id_given=given) == expected


def test_conflict_reason_names_key_task_and_fields() -> None:
    assert conflict_reason("signup-42", "welcome-1", ["task_id", "payload"]) == (
        "idempotency key 'signup-42' was already used by task welcome-1 for a different request "
        "(task_id, payload differ)")


def test_unknown_dependencies_are_sorted_and_unique() -> None:
    assert unknown_dependencies(["z", "known", "a", "z"], {"known"}.__contains__) == ["a", "z"]
