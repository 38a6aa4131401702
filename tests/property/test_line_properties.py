"""The worker's ordered waiting index (`Line`) stays in step with the fold's, for any event
sequence (the fold properties' sequences, placed in their home partitions), and decide
gives the same decisions with it as without it."""

from __future__ import annotations

from hypothesis import given, settings
from test_central_promise_properties import PARTITIONS, placed
from test_fold_properties import sequences

from streams.scheduler import Scheduler
from taskfold.core.events import Event
from taskfold.core.scheduling.decide import decide
from taskfold.core.scheduling.line import Line
from taskfold.core.scheduling.model import QueuePolicy
from taskfold.core.testing import Events


def _decide(scheduler: Scheduler, queue: str, now: int, line: Line | None) -> list:
    current = scheduler.queue(queue)
    heartbeats = {agent: now for agent in current.state.members}
    return decide(current.state, current.fleet, QueuePolicy(), queue=queue, now_ms=now, heartbeats=heartbeats,
                  line=line)


@settings(max_examples=150, deadline=None)
@given(sequences)
def test_the_line_follows_the_waiting_index_and_decides_alike(events: list[Event]) -> None:
    for keep_finished in (False, True):
        scheduler = Scheduler({}, partitions=PARTITIONS, keep_finished=keep_finished)
        for r in placed(events):
            scheduler.apply(r.event, r.partition, r.offset, r.timestamp)
            queue = r.event.queue
            if queue not in scheduler.queues:
                continue
            waiting = scheduler.queue(queue).state.waiting
            line = scheduler.lines.setdefault(queue, Line(waiting))  # from here on kept by apply
            assert line.entries == sorted(waiting.values()) and line.matches(waiting)
            now = r.event.occurred_at + 1
            assert _decide(scheduler, queue, now, line) == _decide(scheduler, queue, now, None)


def test_a_line_that_missed_an_update_is_rebuilt_by_the_scheduler() -> None:
    e = Events()
    events = [e.join("a1"), e.submit("t1"), e.submit("t2")]
    scheduler = Scheduler({}, partitions=1, heartbeats={"a1": events[-1].occurred_at})
    for event in events:
        scheduler.apply(event)
    scheduler.lines["q"] = Line()  # as if two submits had been missed
    decisions = scheduler.decide("q", events[-1].occurred_at + 1)
    assert [d.task_id for d in decisions] == ["t1"]
    assert len(scheduler.lines["q"].entries) == 2
