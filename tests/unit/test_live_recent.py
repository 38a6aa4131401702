"""The live projection's recent window keeps each change slim: the tasks a writer reads back
from it, not the version of the queue's state the change produced (which pinned ~4 KB per
change, 100,000 changes in the window)."""

from __future__ import annotations

from pathlib import Path

from projections.live import remembered
from projections.projector import EVENTS, Projector
from projections.store import Store
from projections.views import all_views
from taskfold.core.testing import Events
from taskfold.log.eventlog import Recorded


def test_a_remembered_change_keeps_what_writers_read_and_nothing_else(tmp_path: Path) -> None:
    e = Events()
    events = [e.join("a", slots=2), e.submit("t1", idempotency_key="k"), e.submit("t2"), e.submit("t3"),
              e.assign("t1", "a"), e.submit("t9", idempotency_key="k")]
    projector = Projector(Store(tmp_path / "s"), all_views(), keep_finished=False)
    changes = projector.apply(EVENTS, [Recorded(ev, 0, n, 0) for n, ev in enumerate(events)])
    assigned, duplicate = remembered(changes[4]), remembered(changes[5])

    assert (assigned.event, assigned.verdict, assigned.tasks) == (changes[4].event, changes[4].verdict, changes[4].tasks)
    assert set(assigned.after.state.tasks) == {"t1"} and not assigned.before.state.tasks
    assert assigned.after.state.task("t1") == changes[4].after.state.task("t1")
    assert not assigned.after.state.members  # the seats, indexes and fleet are not kept
    # A duplicate by key answers with the task that holds the key (writes.judge, admission).
    assert duplicate.verdict.outcome == "duplicate" and duplicate.verdict.ref == "t1"
    assert "t1" in duplicate.after.state.tasks and set(duplicate.after.state.tasks) <= {"t1", "t9"}
    assert duplicate.after.state.task("t1") == changes[5].after.state.task("t1")
    projector.store.close()
