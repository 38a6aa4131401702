"""The projections' store and projector: atomic batches, offsets, duplicates by position."""

from __future__ import annotations

from pathlib import Path

import pytest

from projections.projector import EVENTS, Projector, StoreFormatError
from projections.store import Store, StoreError
from projections.view import Change, Telemetry
from taskfold.core.fold import fold
from taskfold.log.eventlog import Poison, Recorded
from taskfold.core.testing import Events


class Counting:
    """A view that counts accepted events per queue and keeps one row per event."""

    name = "counting"

    def apply(self, change: Change, rows) -> None:  # noqa: ANN001
        row = rows.get("count", change.event.queue) or {"accepted": 0}
        row["accepted"] += change.verdict.accepted
        rows.put("count", change.event.queue, row)
        rows.put("seen", change.key, {"type": change.event.event_type, "verdict": change.verdict.outcome})

    def telemetry(self, item: Telemetry, rows) -> None:  # noqa: ANN001
        pass


def recorded(events, partition: int = 0, start: int = 0) -> list[Recorded]:
    return [Recorded(e, partition, start + i, 0) for i, e in enumerate(events)]


def workload() -> list:
    e = Events()
    return [e.join("a", slots=2), e.submit("t1"), e.submit("t2"), e.assign("t1", "a"),
            e.start("t1", "a"), e.complete("t1", "a"), e.complete("t1", "a")]


def test_batch_reads_its_own_writes_and_commits_atomically(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    batch = store.batch()
    batch.put("t", "k", {"v": 1})
    assert batch.get("t", "k") == {"v": 1}
    assert store.get("t", "k") is None  # nothing visible before the commit
    batch.commit()
    assert store.get("t", "k") == {"v": 1}
    batch = store.batch()
    batch.delete("t", "k")
    batch.commit()
    assert store.get("t", "k") is None


def test_scan_pages_by_prefix_and_after(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    batch = store.batch()
    for key in ["a/1", "a/2", "a/3", "b/1"]:
        batch.put("t", key, key)
    batch.put("u", "a/9", "other table")
    batch.commit()
    assert [k for k, _ in store.scan("t", "a/")] == ["a/1", "a/2", "a/3"]
    assert [k for k, _ in store.scan("t", "a/", after="a/1", limit=1)] == ["a/2"]
    assert [k for k, _ in store.scan("t", "a/", reverse=True)] == ["a/3", "a/2", "a/1"]
    assert [k for k, _ in store.scan("t", "a/", after="a/3", reverse=True)] == ["a/2", "a/1"]


def test_projector_verdicts_equal_the_fold_and_survive_a_restart(tmp_path: Path) -> None:
    events = workload()
    store = Store(tmp_path / "s")
    projector = Projector(store, [Counting()])
    changes = projector.apply(EVENTS, recorded(events[:4]))
    store.close()
    # A new projector resumes from the stored fold rows and offsets.
    store = Store(tmp_path / "s")
    projector = Projector(store, [Counting()])
    changes += projector.apply(EVENTS, recorded(events[4:], start=4))
    _, verdicts = fold(events)
    assert [c.verdict for c in changes] == verdicts
    assert store.get("count", "q") == {"accepted": sum(v.accepted for v in verdicts)}
    assert projector.queue("q").state == fold(events)[0].state("q")


def test_records_below_the_stored_offset_are_dropped(tmp_path: Path) -> None:
    events = workload()
    store = Store(tmp_path / "s")
    projector = Projector(store, [Counting()])
    projector.apply(EVENTS, recorded(events))
    again = projector.apply(EVENTS, recorded(events))  # a redelivery after a restart
    assert again == []
    assert projector.counts["dropped_by_position"] == len(events)
    assert store.offsets(EVENTS) == {0: len(events)}


def test_poison_is_counted_and_recorded_not_fatal(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    projector = Projector(store, [Counting()])
    bad = Poison(1, 0, "not Avro", "q", b"\x00", ())
    (seen,) = projector.apply(EVENTS, [bad])
    assert seen.poison is bad
    assert projector.counts["poison"] == 1
    assert store.get("poison", "events:0001:000000000000")["reason"] == "not Avro"
    assert store.offsets(EVENTS) == {1: 1}


def test_read_only_store_refuses_writes_and_missing_store_is_named(tmp_path: Path) -> None:
    Store(tmp_path / "s").close()
    store = Store(tmp_path / "s", read_only=True)
    with pytest.raises(StoreError, match="read-only"):
        store.batch()
    with pytest.raises(StoreError, match="no projection store"):
        Store(tmp_path / "missing", read_only=True)


def test_store_of_another_format_is_refused_with_the_fix(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    batch = store.batch()
    batch.put("_meta", "format", 99)
    batch.commit()
    with pytest.raises(StoreFormatError, match="replay --rebuild"):
        Projector(store, [])
