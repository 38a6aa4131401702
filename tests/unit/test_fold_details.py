"""What the transitions do beyond the task's state: slots, keys, dependents, workflows, retries."""

from __future__ import annotations

from taskfold.core.events import Backoff, WorkflowNode, WorkflowSubmitted
from taskfold.core.fold import fold
from taskfold.core.policies import retry_delay_ms, workflow_task_id
from taskfold.core.state import TaskState
from taskfold.core.testing import Events


def test_completion_frees_the_slot_and_the_concurrency_key() -> None:
    e = Events()
    ledger, _ = fold([e.join("a1"), e.submit("t1", concurrency_key="conv"), e.assign("t1", "a1"),
                      e.complete("t1", "a1", result='{"ok": true}')])
    state = ledger.state("q")
    assert state.member("a1").holding == frozenset()
    assert "conv" not in state.holders
    assert state.task("t1").result == '{"ok": true}'
    assert state.task("t1").finished_at is not None


def test_completion_releases_same_queue_dependents_and_failure_cancels_them_transitively() -> None:
    e = Events()
    ledger, verdicts = fold([
        e.join("a1", slots=2), e.submit("root"), e.submit("mid", depends_on=["root"]),
        e.submit("leaf", depends_on=["mid"]), e.submit("other"), e.submit("after_other", depends_on=["other"]),
        e.assign("root", "a1"), e.complete("root", "a1"),
        e.assign("other", "a1"), e.fail("other", "a1", retryable=False),
    ])
    assert all(v.accepted for v in verdicts), verdicts
    state = ledger.state("q")
    assert state.task("mid").state == TaskState.queued
    assert state.task("leaf").state == TaskState.blocked
    assert state.task("other").state == TaskState.dead_lettered
    assert state.task("after_other").state == TaskState.cancelled
    assert "other" in state.task("after_other").reason


def test_cancel_cascades_to_dependents() -> None:
    e = Events()
    ledger, _ = fold([e.submit("a"), e.submit("b", depends_on=["a"]), e.submit("c", depends_on=["b"]), e.cancel("a")])
    assert [ledger.state("q").task(t).state for t in "abc"] == [TaskState.cancelled] * 3


def test_workflow_expands_into_tasks_with_derived_ids_in_dependency_order() -> None:
    e = Events()
    flow = WorkflowSubmitted(event_id="w-1", queue="q", occurred_at=5, actor="test", workflow_id="wf",
                             nodes=[WorkflowNode(node="report", task_type="t", depends_on=["fetch", "parse"]),
                                    WorkflowNode(node="parse", task_type="t", depends_on=["fetch"]),
                                    WorkflowNode(node="fetch", task_type="t")])
    ledger, verdicts = fold([flow, flow])
    assert [v.outcome for v in verdicts] == ["accepted", "duplicate"]
    state = ledger.state("q")
    fetch, parse, report = (state.task(workflow_task_id("wf", n)) for n in ("fetch", "parse", "report"))
    assert fetch.state == TaskState.queued and fetch.correlation_id == "wf"
    assert parse.state == report.state == TaskState.blocked
    assert report.waiting_on == {fetch.task_id, parse.task_id}


def test_workflow_with_a_cycle_or_unknown_node_is_rejected_whole() -> None:
    e = Events()
    cycle = WorkflowSubmitted(event_id="w-2", queue="q", occurred_at=5, actor="test", workflow_id="wf2",
                              nodes=[WorkflowNode(node="a", task_type="t", depends_on=["b"]),
                                     WorkflowNode(node="b", task_type="t", depends_on=["a"])])
    unknown = WorkflowSubmitted(event_id="w-3", queue="q", occurred_at=5, actor="test", workflow_id="wf3",
                                nodes=[WorkflowNode(node="a", task_type="t", depends_on=["zz"])])
    ledger, verdicts = fold([cycle, unknown])
    assert "cycle" in verdicts[0].reason and "unknown node 'zz'" in verdicts[1].reason
    assert len(ledger.state("q").tasks) == 0
    del e


def test_duplicate_submit_by_idempotency_key_points_at_the_original_task() -> None:
    e = Events()
    _, verdicts = fold([e.submit("t1", idempotency_key="order-7"), e.submit("t2", idempotency_key="order-7")])
    assert verdicts[1].outcome == "duplicate" and verdicts[1].ref == "t1"


def test_agent_lost_requeues_every_held_attempt_without_charging_it() -> None:
    e = Events()
    ledger, _ = fold([e.join("a1", slots=2), e.submit("t1"), e.submit("t2", max_attempts=1),
                      e.assign("t1", "a1"), e.assign("t2", "a1"), e.leave("a1", reason="lost")])
    state = ledger.state("q")
    assert state.task("t1").state == TaskState.queued and state.task("t1").attempt == 1
    # max_attempts=1: one crashed agent must not kill the task.
    t2 = state.task("t2")
    assert t2.state == TaskState.queued and (t2.lost_attempts, t2.charged_attempts, t2.lost_holders) == (1, 0, ("a1",))
    assert not state.member("a1").active and state.member("a1").holding == frozenset()


def test_agent_drained_hands_back_without_charging_an_attempt() -> None:
    e = Events()
    ledger, verdicts = fold([e.join("a1"), e.join("a2"), e.submit("t1", max_attempts=1), e.assign("t1", "a1"),
                             e.leave("a1", reason="drained"), e.assign("t1", "a2", attempt=2),
                             e.fail("t1", "a2", attempt=2)])
    assert all(v.accepted for v in verdicts), verdicts
    task = ledger.state("q").task("t1")
    assert task.state == TaskState.dead_lettered and task.attempt == 2 and task.free_attempts == 1
    assert "1 of 1" in task.reason


def test_redrive_grants_more_attempts() -> None:
    e = Events()
    ledger, verdicts = fold([e.join("a1"), e.submit("t1", max_attempts=1), e.assign("t1", "a1"),
                             e.fail("t1", "a1"), e.redrive("t1", extra_attempts=2),
                             e.assign("t1", "a1", attempt=2), e.fail("t1", "a1", attempt=2)])
    assert all(v.accepted for v in verdicts), verdicts
    task = ledger.state("q").task("t1")
    assert task.state == TaskState.retry_wait and task.max_attempts == 3


def test_retry_delay_is_exponential_capped_and_deterministic() -> None:
    policy = Backoff(initial_ms=100, multiplier=2.0, max_ms=1_000, jitter=0.0)
    assert [retry_delay_ms(policy, n, "t") for n in (1, 2, 3, 4, 5, 1000)] == [100, 200, 400, 800, 1000, 1000]
    jittered = Backoff(initial_ms=1_000, jitter=0.5)
    delays = {retry_delay_ms(jittered, 1, f"task-{i}") for i in range(50)}
    assert len(delays) > 40 and all(500 <= d <= 1_000 for d in delays)
    assert retry_delay_ms(jittered, 1, "task-1") == retry_delay_ms(jittered, 1, "task-1")


def test_retry_wait_due_time_comes_from_the_policy() -> None:
    e = Events()
    policy = Backoff(initial_ms=250, jitter=0.3)
    ledger, _ = fold([e.join("a1"), e.submit("t1", backoff=policy), e.assign("t1", "a1"),
                      e.fail("t1", "a1", at=10_000)])
    assert ledger.state("q").task("t1").due_at == 10_000 + retry_delay_ms(policy, 1, "t1")


def test_a_task_that_loses_three_holders_in_a_row_is_dead_lettered_with_the_holders_named() -> None:
    e = Events()
    ledger, verdicts = fold([e.join("a1"), e.join("a2"), e.submit("t1", max_attempts=1),
                             e.assign("t1", "a1"), e.start("t1", "a1"), e.leave("a1", reason="lost"),
                             e.assign("t1", "a2", attempt=2), e.expire("t1", "a2", attempt=2), e.join("a1"),
                             e.assign("t1", "a1", attempt=3), e.expire("t1", "a1", attempt=3)])
    assert all(v.accepted for v in verdicts), verdicts
    task = ledger.state("q").task("t1")
    assert task.state == TaskState.dead_lettered
    assert (task.attempt, task.lost_attempts, task.charged_attempts) == (3, 3, 0)
    assert task.reason == ("lost 3 holders in a row (a1, a2, a1): the task may be killing its agents; "
                           "last: lease of agent a1 expired on attempt 3 before it started")
    # Redriven, it gets a fresh row: one more loss puts it back in line, its max_attempts untouched by losses.
    ledger, verdicts = fold([e.redrive("t1", extra_attempts=1), e.assign("t1", "a2", attempt=4),
                             e.expire("t1", "a2", attempt=4)], ledger)
    assert all(v.accepted for v in verdicts), verdicts
    task = ledger.state("q").task("t1")
    assert (task.state, task.max_attempts, task.lost_holders) == (TaskState.queued, 1, ("a2",))


def test_the_audit_books_charge_lost_holders_as_the_fold_does() -> None:
    from taskfold.audit import audit_events

    e = Events()
    events = [e.join("a1"), e.submit("t1", max_attempts=1), e.submit("t2", max_attempts=1)]
    for attempt in (1, 2, 3):
        events += [e.assign("t1", "a1", attempt=attempt), e.leave("a1", reason="lost"), e.join("a1")]
    events += [e.assign("t2", "a1"), e.expire("t2", "a1"), e.assign("t2", "a1", attempt=2), e.complete("t2", "a1", 2)]
    report = audit_events(events, require_terminal=True)
    assert report.ok, report.violations
    assert report.states == {"dead_lettered": 1, "completed": 1}
