"""The time index: resolves a time to the offsets of a time cut, without the broker.

`Cut(until_ms=T)` closes a partition at its first event stamped after T
(`taskfold.log.eventlog.CutRule`). That is exactly the first offset where the running
maximum of `occurred_at` exceeds T, so the index keeps, per partition, the offset at
which each new running maximum was reached (a row only when the maximum grows):

* `time_index`  partition (4 digits), running max (16 digits) -> first offset with that max
* `time_max`    partition (4 digits) -> the running max so far

The cut offset of T is then the offset of the first `time_index` row whose running max is
greater than T: one range lookup per partition (`projections.queries.cut_offsets`).
An event the fold rejects as stamped too far ahead of its record has no stamp
(`Change.stamp`), so it neither moves the maximum nor closes a cut.
"""

from __future__ import annotations

from projections.view import Change, Rows, Telemetry
from projections.views.viewrows import join

TIME_INDEX = "time_index"
TIME_MAX = "time_max"


def partition_part(partition: int) -> str:
    """A partition as a key part."""
    return f"{partition:04d}"


def time_part(ms: int) -> str:
    """A time as a sortable key part."""
    return f"{ms:016d}"


class TimeIndexView:
    """Running maxima of `occurred_at` per partition of `events`."""

    name = "time_index"

    def apply(self, change: Change, rows: Rows) -> None:
        at = change.stamp
        if at is None:
            return
        partition = partition_part(change.partition)
        top = rows.get(TIME_MAX, partition)
        if top is not None and at <= top:
            return
        rows.put(TIME_MAX, partition, at)
        rows.put(TIME_INDEX, join(partition, time_part(at)), change.offset)

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        """Only events are indexed: a cut is judged by the events' own times."""
