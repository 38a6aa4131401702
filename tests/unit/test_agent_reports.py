"""What the agent appends: derived report ids, outcome reports, membership, telemetry records."""

from __future__ import annotations

import math

import pytest

from schemas.codec import PoisonMessage, header_value
from taskfold.core.reports import (
    CANCELLED, OUTCOME, STARTED, AttemptEnd, AttemptKey, Reporter, chunk_id, error_text, report_id, result_text,
)
from taskfold.core.events import TaskCancelled, TaskCompleted, TaskFailed
from taskfold.core.fold import fold
from taskfold.core.telemetry import ChunkKind, Heartbeat, ProgressChunk
from taskfold.core.testing import Events
from taskfold.log.wire import decode_event, decode_record, encode_record

KEY = AttemptKey("emails", "t1", 2)


def reporter() -> Reporter:
    ticks = iter(range(5_000, 6_000))
    return Reporter("agent-1", clock=lambda: next(ticks))


def test_report_ids_are_derived_from_attempt_and_step() -> None:
    r1, r2 = reporter(), reporter()
    assert r1.started(KEY).event_id == r2.started(KEY).event_id == report_id(KEY, STARTED)
    ids = {report_id(KEY, step) for step in (STARTED, OUTCOME, CANCELLED)}
    ids |= {report_id(AttemptKey("emails", "t1", 3), STARTED), report_id(AttemptKey("other", "t1", 2), STARTED)}
    assert len(ids) == 5
    assert r1.outcome(KEY, AttemptEnd("completed")).event_id == r1.outcome(KEY, AttemptEnd("failed", error="x")).event_id


def test_outcomes_become_the_matching_report() -> None:
    r = reporter()
    done = r.outcome(KEY, AttemptEnd("completed", result='{"ok": true}'), correlation_id="wf-1")
    assert isinstance(done, TaskCompleted) and done.result == '{"ok": true}' and done.correlation_id == "wf-1"
    assert (done.task_id, done.attempt, done.agent_id, done.queue, done.actor) == ("t1", 2, "agent-1", "emails", "agent:agent-1")
    failed = r.outcome(KEY, AttemptEnd("failed", error="boom", retryable=False))
    assert isinstance(failed, TaskFailed) and failed.error == "boom" and not failed.retryable
    cancelled = r.outcome(KEY, AttemptEnd("cancelled"))
    assert isinstance(cancelled, TaskCancelled) and cancelled.event_id == report_id(KEY, CANCELLED)
    assert r.outcome(KEY, AttemptEnd("revoked")) is None


def test_a_resent_report_folds_as_a_duplicate() -> None:
    e = Events(queue="emails")
    r1, r2 = reporter(), reporter()
    events = [e.join("agent-1", slots=1), e.submit("t1"), e.assign("t1", "agent-1", attempt=1),
              e.fail("t1", "agent-1", attempt=1), e.assign("t1", "agent-1", attempt=2, at=10**9)]
    key = AttemptKey("emails", "t1", 2)
    reports = [r1.started(key), r2.started(key), r1.outcome(key, AttemptEnd("completed")),
               r2.outcome(key, AttemptEnd("completed"))]
    _, verdicts = fold(events + reports)
    assert [v.outcome for v in verdicts[-4:]] == ["accepted", "duplicate", "accepted", "duplicate"]


def test_result_and_error_texts() -> None:
    assert result_text({"a": [1, None]}) == '{"a": [1, null]}'
    assert result_text(None) == "null"
    with pytest.raises(TypeError):
        result_text(object())
    with pytest.raises(ValueError):
        result_text(math.nan)  # NaN is not JSON
    assert error_text(ValueError("bad input")) == "ValueError: bad input"
    assert error_text(KeyError()) == "KeyError"
    assert len(error_text(RuntimeError("x" * 10_000))) == 4000


def test_joined_left_and_heartbeat() -> None:
    r = reporter()
    joined = r.joined("emails", 4, ["smtp", "gpu", "smtp"], {"region": "eu"})
    assert (joined.queue, joined.slots, joined.capabilities, joined.labels) == ("emails", 4, ["gpu", "smtp"], {"region": "eu"})
    assert joined.event_id != r.joined("emails", 4, [], {}).event_id  # each run is a new membership decision
    assert r.left("emails").reason.value == "drained"
    beat = r.heartbeat({"reports": 1, "emails": 4}, {"emails": 3}, draining=True)
    assert beat == Heartbeat(agent_id="agent-1", queues=["emails", "reports"], sent_at=beat.sent_at,
                             load={"emails": 3, "reports": 0}, slots={"emails": 4, "reports": 1}, draining=True)


def test_chunks_have_derived_ids_and_validated_kinds() -> None:
    r = reporter()
    chunk = r.chunk(KEY, 3, "tool_result", '{"x": 1}')
    assert chunk.kind is ChunkKind.tool_result and chunk.chunk_id == chunk_id(KEY, 3) != chunk_id(KEY, 4)
    with pytest.raises(ValueError):
        r.chunk(KEY, 0, "shout", "hi")


@pytest.mark.parametrize("record", [
    Heartbeat(agent_id="a", queues=["q"], sent_at=1, load={"q": 1}, slots={"q": 2}),
    ProgressChunk(chunk_id="c", task_id="t", attempt=1, agent_id="a", queue="q", seq=0, kind=ChunkKind.log,
                  content="hello ☺", occurred_at=2),
], ids=["Heartbeat", "ProgressChunk"])
def test_telemetry_round_trips_and_is_poison_to_event_readers(record) -> None:
    value, headers = encode_record(record)
    assert decode_record(value) == record
    assert header_value(headers, "type") == record.record_type and header_value(headers, "agent") == "a"
    assert header_value(headers, "task") == getattr(record, "task_id", None)
    with pytest.raises(PoisonMessage, match="no event class"):
        decode_event(value)  # a heartbeat on the events topic is set aside, not folded


def test_report_ids_never_collide_with_the_schedulers_ids_for_the_same_attempt() -> None:
    from taskfold.core.policies import derived_event_id

    scheduler_ids = {derived_event_id(str(KEY), index) for index in range(4)}
    report_ids = {report_id(KEY, step) for step in (STARTED, OUTCOME, CANCELLED)}
    assert not scheduler_ids & report_ids
