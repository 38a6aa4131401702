"""The projector's working set: rows staged per batch, finished tasks kept in the store only.

A rebuild applies big batches with `keep_finished=False`; a live projection may apply one
record at a time with every task in memory. Both must leave the same rows and verdicts.
"""

from __future__ import annotations

from pathlib import Path

from projections.projector import EVENTS, Projector
from projections.store import Store
from projections.views import all_views
from projections.workingset import FOLD_KEYS
from taskfold.core.events import WorkflowNode, WorkflowSubmitted
from taskfold.core.policies import workflow_task_id
from taskfold.core.testing import Events
from taskfold.log.eventlog import Recorded


def history() -> list:
    """Events that read finished tasks again: resubmits, reused keys, late reports, dependencies, redrives."""
    e = Events()
    done = e.complete("t1", "a")
    return [
        e.join("a", slots=2), e.join("b", slots=1),
        e.submit("t1", idempotency_key="k1"), e.assign("t1", "a"), e.start("t1", "a"), done,
        e.submit("t1"),  # rejected: t1 exists, though it left memory
        e.submit("t9", idempotency_key="k1"),  # duplicate of t1 by its key
        done,  # the same event again: a duplicate by event id
        e.complete("t1", "a", result='"late"'),
        e.submit("t2", depends_on=["t1"]),  # satisfied at once: t1 completed
        e.submit("t3", max_attempts=1), e.assign("t3", "b"), e.start("t3", "b"),
        e.fail("t3", "b", retryable=False),
        e.submit("t4", depends_on=["t3"]),  # cancelled at once: t3 is dead-lettered
        e.redrive("t3"), e.assign("t3", "b", attempt=2), e.start("t3", "b", attempt=2),
        e.complete("t3", "b", attempt=2),
        e.submit("t5"), e.cancel("t5"), e.cancel("t5"),
        e.assign("t2", "a"), e.start("t2", "a"), e.leave("a", reason="lost"),
        e.submit("t6", idempotency_key="k1"),
        flow("w-1"), e.cancel(workflow_task_id("wf", "b")), e.cancel(workflow_task_id("wf", "a")),
        flow("w-2"),  # rejected: the workflow's tasks exist, though they left memory
        flow("w-1"),  # the same event again: a duplicate
    ]


def flow(event_id: str) -> WorkflowSubmitted:
    """Workflow `wf`: node b depends on node a."""
    return WorkflowSubmitted(event_id=event_id, queue="q", occurred_at=5_000, actor="test", workflow_id="wf",
                             nodes=[WorkflowNode(node="a", task_type="x"),
                                    WorkflowNode(node="b", task_type="x", depends_on=["a"])])


def everything(store: Store, *, but: str = FOLD_KEYS) -> dict[bytes, bytes]:
    """Every row of the store but one table's."""
    return {k: v for k, v in store._db.items() if not k.startswith(but.encode() + b"\x00")}


def project(path: Path, events: list, size: int, *, keep_finished: bool,
            keys_in_store: bool = True) -> tuple[Projector, list[str]]:
    store = Store(path)
    projector = Projector(store, all_views(), keep_finished=keep_finished, keys_in_store=keys_in_store)
    entries = [Recorded(event, 0, offset, 0) for offset, event in enumerate(events)]
    verdicts = []
    for i in range(0, len(entries), size):
        verdicts += [str(c.verdict) for c in projector.apply(EVENTS, entries[i:i + size])]
    return projector, verdicts


def test_batched_rows_without_finished_tasks_equal_one_by_one_with_all(tmp_path: Path) -> None:
    events = history()
    one_by_one, expected = project(tmp_path / "one", events, 1, keep_finished=True)
    for size in (2, 3, 7, len(events)):
        batched, verdicts = project(tmp_path / f"batched-{size}", events, size, keep_finished=False)
        assert verdicts == expected, size
        assert everything(batched.store) == everything(one_by_one.store), size
        batched.store.close()
    assert "rejected: task t1 was already submitted" in expected
    assert any(v.startswith("rejected: workflow wf was already submitted") for v in expected)
    assert expected[-1] == "duplicate: event already applied"
    assert any(v.startswith("duplicate: idempotency key 'k1'") for v in expected)


def test_finished_tasks_leave_memory_and_come_back_for_a_redrive(tmp_path: Path) -> None:
    e = Events()
    events = [e.join("a", slots=1), e.submit("t1", max_attempts=1), e.assign("t1", "a"), e.start("t1", "a"),
              e.fail("t1", "a", retryable=False), e.submit("t2"), e.assign("t2", "a")]
    projector, _ = project(tmp_path / "s", events, 3, keep_finished=False)
    assert set(projector.queue("q").state.tasks) == {"t2"}  # t1 is dead-lettered: in the store only
    assert dict(projector.queue("q").state.idempotency) == {}
    entries = [Recorded(e.redrive("t1"), 0, len(events), 0)]
    (change,) = projector.apply(EVENTS, entries)
    assert change.verdict.accepted
    assert projector.queue("q").state.tasks["t1"].state.value == "queued"


def test_a_live_projection_keeps_keys_in_memory_finds_finished_tasks_and_writes_what_a_rebuild_does(
        tmp_path: Path) -> None:
    # The gateway's live projection: finished tasks in the store only, idempotency keys in
    # memory, so the store has no _fold_keys rows and equals one that kept every task.
    events = history()
    kept, expected = project(tmp_path / "kept", events, 1, keep_finished=True)
    live, verdicts = project(tmp_path / "live", events, 1, keep_finished=False, keys_in_store=False)
    assert verdicts == expected
    assert everything(live.store, but="none") == everything(kept.store)
    state = live.queue("q").state
    assert "t1" not in state.tasks and state.idempotency["k1"] == "t1"
    assert live.task("q", "t1") == kept.task("q", "t1") and live.task("q", "t1").state.value == "completed"
    assert live.key_owner("q", "k1") == "t1" and live.task("q", "nope") is None
    # A duplicate by key: the state after the event holds the task that has the key, which
    # the gateway shows (writes.judge) and compares (admission.conflict_after).
    e = Events(seed="again")
    (change,) = live.apply(EVENTS, [Recorded(e.submit("t7", idempotency_key="k1"), 0, len(events), 0)])
    assert str(change.verdict).startswith("duplicate: idempotency key 'k1'")
    assert change.after.state.task(change.verdict.ref).task_id == "t1"
    live.store.close()
    kept.store.close()
