"""What issue 12's CPU work promises beside the same answers (test_fold_equivalence): the
fold makes one task per event, the scheduler's step encodes each row once, a rejected
event writes nothing, an ordinary submit is sized without encoding its strings, and rows
are byte for byte what `json.dumps` of `plain` values gives."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import pytest

from taskfold.core import foldrows
from taskfold.core.events import Backoff, Event, Priority
from taskfold.core.fold import evolve, limits
from taskfold.core.scheduling.model import AgentRecord, QueuePolicy
from taskfold.core.state import EMPTY, Member, Task, TaskState
from taskfold.core.testing import Events

_MAKERS = {"replace", "replaced", "created", "__init__"}


@contextmanager
def tasks_made() -> Iterator[Counter]:
    """Count the Task objects built or copied (constructor, dataclasses.replace, replaced, created)."""
    made: Counter = Counter()

    def profile(frame: Any, what: str, _: Any) -> None:
        if what != "call" or frame.f_code.co_name not in _MAKERS:
            return
        first = next(iter(frame.f_locals.values()), None)  # self, obj, row or cls
        if frame.f_code.co_name == "__init__" and isinstance(first, Task):
            made["tasks"] += 1
        elif frame.f_code.co_name != "__init__" and (isinstance(first, Task) or first is Task):
            made["tasks"] += frame.f_code.co_name != "replace"  # replace calls __init__, counted there

    sys.setprofile(profile)
    try:
        yield made
    finally:
        sys.setprofile(None)


def _life(e: Events) -> list[Event]:
    return [e.join("a", slots=2), e.submit("t", backoff=Backoff(initial_ms=0)), e.assign("t", "a"),
            e.start("t", "a"), e.fail("t", "a"), e.assign("t", "a", attempt=2), e.expire("t", "a", attempt=2),
            e.assign("t", "a", attempt=3), e.start("t", "a", attempt=3), e.complete("t", "a", attempt=3)]


def test_every_accepted_event_of_a_task_makes_one_task() -> None:
    state, counts = EMPTY, {}
    for event in _life(Events()):
        with tasks_made() as made:
            state, verdict = evolve(state, event)
        assert verdict.accepted, (event, verdict)
        counts[type(event).__name__ + str(len(counts))] = made["tasks"]
    # A join makes no task; a submit, an assignment, a start and each end make exactly one.
    assert list(counts.values()) == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1], counts


def _encodes(monkeypatch: pytest.MonkeyPatch) -> Counter:
    seen: Counter = Counter()
    real: Callable[[Any], bytes] = foldrows.encode

    def counting(row: Any) -> bytes:
        seen[type(row).__name__] += 1
        return real(row)

    monkeypatch.setattr(foldrows, "encode", counting)
    return seen


def test_the_schedulers_step_encodes_each_changed_row_once(monkeypatch: pytest.MonkeyPatch) -> None:
    e, policy, queue = Events(), QueuePolicy(), foldrows.Queue()
    for event in [e.join("a"), e.submit("t", payload='{"big": "' + "x" * 1000 + '"}'), e.assign("t", "a"),
                  e.start("t", "a")]:
        queue = foldrows.step(queue, event, policy).after
    seen = _encodes(monkeypatch)
    done = foldrows.slimmed(foldrows.step(queue, e.complete("t", "a", result='{"ok": true}'), policy))
    task_rows = [v for k, v in done.writes if foldrows.parse_key(k)[1] == foldrows.TASK]
    assert done.writes == done.writes  # asked twice, encoded once
    assert seen == {"Task": 1, "AgentRecord": 1}, seen
    assert json.loads(task_rows[0])["payload"] == foldrows.NOT_KEPT


def test_a_rejected_event_changes_nothing_and_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    e = Events()
    queue = foldrows.step(foldrows.Queue(), e.submit("t"), QueuePolicy()).after
    seen = _encodes(monkeypatch)
    done = foldrows.step(queue, e.start("t", "a"), QueuePolicy())
    assert done.verdict.outcome == "rejected"
    assert done.after == queue and done.writes == [] and done.tasks == [] and not seen


def test_an_ordinary_submit_is_sized_without_encoding_its_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_: Any) -> Iterator[str]:
        raise AssertionError("the strings of an ordinary submit were encoded to count their bytes")

    monkeypatch.setattr(limits, "_strings", refuse)
    e = Events()
    _, verdict = evolve(EMPTY, e.submit("t", labels={"zone": "eu"}, depends_on=["d"], session_id="s"))
    assert verdict.accepted


@pytest.mark.parametrize(("chars", "accepted"), [(100, True), (32_766, True), (32_767, False)])
def test_fields_near_the_limit_are_still_judged_by_their_utf8_bytes(chars: int, accepted: bool) -> None:
    # "é" is 2 bytes, the task type "echo" 4: 32,766 of them make 65,536 bytes, the limit. Past
    # 16,382 characters four bytes a character could pass it, so the bytes are counted.
    _, verdict = evolve(EMPTY, Events().submit("é" * chars))
    assert verdict.accepted is accepted, verdict
    if not accepted:
        assert verdict.reason is not None and "is 65,538 bytes, over the limit of 65,536" in verdict.reason


def _reference(row: Any) -> bytes:
    """The row encoding before issue 12: every field through `plain`, then json.dumps."""
    body: dict[str, Any] = {"_v": foldrows.ROW_FORMAT}
    for f in fields(row):
        value = getattr(row, f.name)
        body[f.name] = value if type(value) in (str, int, float, bool, type(None)) else foldrows.plain(value)
    return json.dumps(body, separators=(",", ":")).encode()


def test_rows_are_the_bytes_json_dumps_of_plain_values_gives() -> None:
    task = Task(task_id="t-ü", queue="q", task_type="echo", priority=Priority.critical, payload='{"a": "\\u00e9"}',
                state=TaskState.retry_wait, arrival=1, submitted_at=2, timeout_ms=3, max_attempts=4,
                backoff=Backoff(multiplier=1.5, jitter=0.0), waiting_on=frozenset({"b", "a"}),
                depends_on=("a", "b"), labels=(("zone", "eu"), ("gpu", "ja")), event_ids=frozenset({"z", "y"}),
                required_capabilities=frozenset({"x"}), lost_holders=("a1", "a2"), error="boom\n\"quoted\"",
                reason="ünïcode ✓", due_at=5)
    seat = Member("a", slots=2, capabilities=frozenset({"ssd", "gpu"}), labels=(("zone", "eu"),),
                  holding=frozenset({"t2", "t1"}), left_at=None, event_ids=frozenset({"e"}))
    agent = AgentRecord("a", success_ewma=0.75, latency_ewma_ms=float("inf"), quarantined_until=9, tripped_by="x")
    for row in (task, seat, agent, foldrows.Session("a", 3)):
        assert foldrows.encode(row) == _reference(row), type(row).__name__
    assert foldrows.decode(Task, foldrows.encode(task)) == task
