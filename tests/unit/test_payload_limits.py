"""One payload limit for every writer, hard maxima in the fold, and a worker that keeps no payloads.

Issue 10, item 4: a payload the gateway accepted crashed the scheduler worker, whose task
row carried the payload again, JSON-escaped, past the producer's record limit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError
from faust.transport.producer import ProducerBuffer
from pydantic import ValidationError
from typer.testing import CliRunner

from streams import sendguard
from streams.processor import Processor
from streams.scheduler import Scheduler
from taskfold.broker.topics import queue_partition
from taskfold.core import foldrows, workingset
from taskfold.agent import TaskContext
from taskfold.agent.attempts import run_attempt
from taskfold.core.reports import AttemptEnd, AttemptKey, Reporter
from taskfold.cli.app import app
from taskfold.core.edge import payload_limit
from taskfold.core.requests import InvalidRequest, cancel_request, submission
from taskfold.config import DEFAULT_MAX_PAYLOAD_BYTES, Limits, Settings
from taskfold.core.events import Event, WorkflowNode, WorkflowSubmitted
from taskfold.core.fold import Ledger
from taskfold.core.fold.limits import FIELDS_HARD_MAX_BYTES, PAYLOAD_HARD_MAX_BYTES
from taskfold.core.scheduling.model import QueuePolicy
from taskfold.core.testing import Events
from taskfold.log.records import ConsumedRecord
from taskfold.log.wire import encode_event


def text(size: int) -> str:
    """JSON text (a string) of exactly `size` bytes."""
    return json.dumps("x" * (size - 2))


def quotes(size: int) -> str:
    """JSON text of exactly `size` bytes made of escaped quotes: JSON-escaped again, it doubles."""
    body = (size - 2) // 2
    out = json.dumps('"' * body)
    return out if len(out) == size else json.dumps('"' * body + "x")


# --- writers: the setting --------------------------------------------------------------

def test_the_default_limit_is_512_kib_and_within_the_folds_hard_maximum() -> None:
    assert payload_limit() == DEFAULT_MAX_PAYLOAD_BYTES == 524_288 <= PAYLOAD_HARD_MAX_BYTES


@pytest.mark.parametrize("size", [1023, 1024])
def test_a_payload_at_or_just_under_the_limit_is_accepted(size: int) -> None:
    event = submission("q", "echo", payload=text(size), max_payload_bytes=1024)
    assert len(event.payload.encode()) == size


def test_a_payload_just_over_the_limit_is_refused_naming_field_size_and_limit() -> None:
    with pytest.raises(InvalidRequest) as refused:
        submission("q", "echo", payload=text(1025), max_payload_bytes=1024)
    assert refused.value.problems == [
        ("payload", "payload is 1,025 bytes, over the limit of 1,024 (TASKFOLD_MAX_PAYLOAD_BYTES)")]


def test_the_default_limit_applies_when_none_is_given() -> None:
    submission("q", "echo", payload=text(DEFAULT_MAX_PAYLOAD_BYTES))
    with pytest.raises(InvalidRequest, match=r"payload is 524,289 bytes, over the limit of 524,288"):
        submission("q", "echo", payload=text(DEFAULT_MAX_PAYLOAD_BYTES + 1))


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    payload = json.dumps("é" * 500, ensure_ascii=False)  # 502 characters, 1,002 bytes
    with pytest.raises(InvalidRequest, match="payload is 1,002 bytes"):
        submission("q", "echo", payload=payload, max_payload_bytes=1001)


def test_the_setting_comes_from_the_environment_and_may_not_pass_the_hard_maximum(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFOLD_MAX_PAYLOAD_BYTES", "65536")
    assert Limits().max_payload_bytes == Settings().max_payload_bytes == 65_536
    monkeypatch.setenv("TASKFOLD_MAX_PAYLOAD_BYTES", str(PAYLOAD_HARD_MAX_BYTES + 1))
    with pytest.raises(ValidationError, match="max_payload_bytes"):
        Limits()


def test_a_cancel_reason_is_bounded() -> None:
    cancel_request("q", "t", "x" * 4096)
    with pytest.raises(InvalidRequest, match="reason is 4,097 bytes"):
        cancel_request("q", "t", "x" * 4097)


# --- the SDK: a handler's result ---------------------------------------------------------

def context() -> TaskContext:
    e, ledger = Events(), Ledger()
    for event in (e.join("a"), e.submit("t1"), e.assign("t1", "a")):
        ledger.apply(event)

    async def emit(chunk: Any) -> None:
        pass

    return TaskContext(AttemptKey("q", "t1", 1), ledger.state("q").task("t1"), "a", Reporter("a"), emit)


@pytest.mark.parametrize("size", [DEFAULT_MAX_PAYLOAD_BYTES - 1, DEFAULT_MAX_PAYLOAD_BYTES])
async def test_a_result_at_or_under_the_limit_completes(size: int) -> None:
    async def handler(task: TaskContext) -> str:
        return "x" * (size - 2)  # its JSON text is `size` bytes

    outcome = await run_attempt(handler, context())
    assert outcome.kind == "completed" and len(outcome.result) == size


async def test_a_result_over_the_limit_fails_the_attempt_for_good_naming_the_limit() -> None:
    async def handler(task: TaskContext) -> str:
        return "x" * (DEFAULT_MAX_PAYLOAD_BYTES - 1)

    assert await run_attempt(handler, context()) == AttemptEnd(
        "failed", retryable=False,
        error="result is 524,289 bytes, over the limit of 524,288 (TASKFOLD_MAX_PAYLOAD_BYTES)")


# --- the fold: hard maxima, the same for every reader --------------------------------------

def test_the_fold_rejects_a_submit_over_its_hard_maxima_whoever_wrote_it() -> None:
    e, ledger = Events(), Ledger()
    at = ledger.apply(e.submit("at", payload=text(PAYLOAD_HARD_MAX_BYTES)))
    over = ledger.apply(e.submit("over", payload=text(PAYLOAD_HARD_MAX_BYTES + 1)))
    labels = ledger.apply(e.submit("labels", labels={"k": "v" * FIELDS_HARD_MAX_BYTES}))
    assert at.accepted
    assert str(over) == "rejected: payload is 786,433 bytes, over the limit of 786,432 (the fold's hard maximum)"
    assert str(labels) == ("rejected: the sum of the task's ids, labels, capabilities and dependencies is "
                           "65,547 bytes, over the limit of 65,536 (the fold's hard maximum)")
    assert ledger.state("q").task("over") is None and ledger.state("q").task("labels") is None


def test_the_fold_rejects_a_workflow_with_a_node_over_the_hard_maximum() -> None:
    e, ledger = Events(), Ledger()
    nodes = [WorkflowNode(node="a", task_type="x"), WorkflowNode(node="b", task_type="x", depends_on=["a"],
                                                                  payload=text(PAYLOAD_HARD_MAX_BYTES + 1))]
    envelope = {"event_id": "w1", "queue": "q", "occurred_at": e.now, "actor": "test"}
    verdict = ledger.apply(WorkflowSubmitted(**envelope, workflow_id="wf", nodes=nodes))
    assert str(verdict) == ("rejected: node b: payload is 786,433 bytes, over the limit of 786,432 "
                            "(the fold's hard maximum)")


def test_writers_refuse_what_the_fold_would_reject_for_its_size() -> None:
    with pytest.raises(InvalidRequest) as refused:
        submission("q", "echo", labels={"k": "v" * FIELDS_HARD_MAX_BYTES})
    [(field, reason)] = refused.value.problems
    assert field == "(request)" and "over the limit of 65,536" in reason


# --- the worker's rows: no payloads, no results ------------------------------------------

def big_run() -> tuple[Events, list[Event]]:
    e = Events()
    return e, [e.join("a", slots=2), e.submit("t1", payload=quotes(DEFAULT_MAX_PAYLOAD_BYTES)),
               e.assign("t1", "a"), e.start("t1", "a"), e.complete("t1", "a", result=text(DEFAULT_MAX_PAYLOAD_BYTES)),
               e.submit("t2", payload='{"n": 2}'), e.assign("t2", "a"), e.fail("t2", "a", retryable=False,
                                                                             error="boom " * 10_000)]


def test_the_schedulers_rows_carry_no_payload_or_result_and_short_texts() -> None:
    _, events = big_run()
    store: dict[bytes, bytes] = {}
    scheduler = Scheduler(store, partitions=4, policy=lambda q: QueuePolicy())
    for offset, event in enumerate(events):
        scheduler.apply(event, queue_partition("q", 4), offset)
    assert max(len(v) for v in store.values()) < 3_000
    stored = foldrows.read(store.items()).queues["q"].state()
    t1, t2 = stored.task("t1"), stored.task("t2")
    assert (t1.state.value, t1.payload, t1.result) == ("completed", foldrows.NOT_KEPT, None)
    assert t2.state.value == "dead_lettered" and len(t2.error) == len(t2.reason) == foldrows.TEXT_KEPT_CHARS
    full = Ledger()
    for event in events:
        full.apply(event)
    # Its rows and a fresh fold made slim agree; it holds them but the finished tasks (in its rows only).
    assert stored == foldrows.slim_state(full.state("q"))
    assert scheduler.queue("q").state == workingset.without(stored, ["t1", "t2"])


def test_the_projections_rows_still_hold_payloads_and_results() -> None:
    _, events = big_run()
    queue = foldrows.Queue()
    written: dict[bytes, bytes] = {}
    for event in events:
        done = foldrows.step(queue, event, QueuePolicy())
        queue = done.after
        written.update((k, v) for k, v in done.writes if v is not None)
    t1 = foldrows.read(written.items()).queues["q"].state().task("t1")
    assert t1.payload == quotes(DEFAULT_MAX_PAYLOAD_BYTES) and t1.result == text(DEFAULT_MAX_PAYLOAD_BYTES)


# --- never a crash ------------------------------------------------------------------------

class Refusing:
    """An outbox whose producer refuses everything for its size."""

    def __init__(self) -> None:
        self.tried = 0

    async def append(self, events: Sequence[Event]) -> None:
        self.tried += len(events)
        raise ProducerSendError("Error while sending: MessageSizeTooLargeError()")

    async def quarantine(self, record: ConsumedRecord, reason: str) -> None:
        raise ProducerSendError("Error while sending: MessageSizeTooLargeError()")


async def test_a_decision_or_poison_copy_the_producer_refuses_is_counted_and_the_worker_goes_on() -> None:
    e, outbox = Events(), Refusing()
    processor = Processor(Scheduler({}, partitions=4), outbox, clock_ms=lambda: e.now)
    for offset, event in enumerate([e.join("a"), e.submit("t1")]):
        value, headers = encode_event(event)
        await processor.on_record(ConsumedRecord("events", queue_partition("q", 4), offset, None, "q", value, tuple(headers)))
    poison = await processor.on_record(ConsumedRecord("events", queue_partition("q", 4), 2, None, "q", b"not avro", ()))
    assert outbox.tried >= 1 and poison.poison is not None
    assert processor.counts["append_errors"] >= 2 and processor.counts["decisions"] == 0
    assert await processor.on_tick() == []  # and the timer goes on too


class Message:
    def __init__(self, error: Exception) -> None:
        self.key, self.value, self.error = b"q\x00t\x00t1", b"x" * 10, error
        self.channel = self

    def get_topic_name(self) -> str:
        return "rows-changelog"

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        raise self.error


class Pending(asyncio.Future):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.message = Message(error)


async def test_the_send_guard_drops_a_record_too_large_and_raises_anything_else() -> None:
    too_large = ProducerSendError("Error while sending")
    too_large.__cause__ = MessageSizeTooLargeError("The message is 1800998 bytes")
    fut = Pending(too_large)
    before = sendguard.dropped["rows-changelog"]
    await sendguard._send_pending(None, fut)  # faust's buffer task would die here
    assert fut.done() and fut.exception() is too_large
    assert sendguard.dropped["rows-changelog"] == before + 1
    with pytest.raises(ProducerSendError):
        await sendguard._send_pending(None, Pending(ProducerSendError("no cause")))
    transient = ProducerSendError("Error while sending")
    transient.__cause__ = KafkaTimeoutError()
    with pytest.raises(ProducerSendError):
        await sendguard._send_pending(None, Pending(transient))


def test_the_guard_is_installed_on_fausts_buffer_and_can_be_removed() -> None:
    sendguard.install()
    assert ProducerBuffer._send_pending is sendguard._send_pending
    sendguard.uninstall()
    assert ProducerBuffer._send_pending is not sendguard._send_pending
    sendguard.install()


# --- the CLI --------------------------------------------------------------------------------

def test_cli_submit_over_the_limit_exits_2_naming_the_limit_before_connecting() -> None:
    result = CliRunner().invoke(app, ["submit", "q", "echo", "--payload", text(DEFAULT_MAX_PAYLOAD_BYTES + 1)])
    assert result.exit_code == 2
    assert "payload is 524,289 bytes, over the limit of 524,288 (TASKFOLD_MAX_PAYLOAD_BYTES)" in \
        " ".join(result.output.split())
