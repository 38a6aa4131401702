"""The analytics view: per-minute counts, wait and run time histograms, and agent busy time.

Everything is bucketed by the minute of the event's own `occurred_at`, and every event
costs a few row updates whatever the history's length. Percentiles are computed when
asked (`projections.queries.analytics`) by merging the histograms of the minutes asked for.

Tables (keys NUL-joined; minute = occurred_at // 60000 as 10 digits):
* `an_minute`  queue, minute -> {submitted, completed, failed, dead_lettered, cancelled, rejected}
               (failed counts attempts that failed, timed out or lost their lease)
* `an_hist`    queue, metric ("wait" | "run" | "start" | "done"), minute, task_type -> {n, sum, b: {bucket: count}}
               wait: ready to assignment, per assignment; run: start to completion, per
               completed attempt; start: submitted to the start of attempt 1; done: submitted
               to completion, per completed task (the dashboard's end-to-end latencies);
               buckets are fixed and log-spaced (`bucket`, `bucket_value`)
* `an_busy`    queue, minute, agent -> ms the agent held attempts that ended in that minute
               (utilization = busy / (slots * window), an approximation: an attempt counts
               in the minute it ended)
* `an_ready`   queue, task_id -> since when the task has been ready (while it waits)

A window ends by default at the newest `occurred_at` applied, which the time index keeps
(`time_max`), so this view does not write it again for every event.
"""

from __future__ import annotations

import math
from typing import Any

from projections.view import Change, Rows, Telemetry
from projections.views.viewrows import join
from projections.views.timing import attempt_began, attempt_ended, ready_since, run_ms, wait_ms
from taskfold.core.state import Task, TaskState

MINUTES = "an_minute"
HIST = "an_hist"
BUSY = "an_busy"
READY = "an_ready"
MINUTE_MS = 60_000
PER_DECADE = 20  # buckets per power of ten: a bucket's values are within about 12% of each other
COUNTS = ("submitted", "completed", "failed", "dead_lettered", "cancelled", "rejected")
FAILURES = frozenset({"TaskFailed", "TaskTimedOut", "TaskLeaseExpired"})
WAITING = frozenset({TaskState.queued, TaskState.scheduled, TaskState.retry_wait})  # ready rows exist for these
ENTERED = {TaskState.completed: "completed", TaskState.dead_lettered: "dead_lettered",
           TaskState.cancelled: "cancelled"}


def minute_part(ms: int) -> str:
    """The minute of a time as a sortable key part."""
    return f"{ms // MINUTE_MS:010d}"


def bucket(ms: int) -> int:
    """The histogram bucket of a duration: 0 for 0 ms, else 1 + floor(20 * log10(ms))."""
    return 0 if ms < 1 else 1 + int(math.log10(ms) * PER_DECADE)


def bucket_value(index: int) -> float:
    """The value a bucket stands for: the geometric middle of its bounds."""
    return 0.0 if index == 0 else 10 ** ((index - 0.5) / PER_DECADE)


def add_sample(hist: dict[str, Any] | None, ms: int) -> dict[str, Any]:
    """A histogram with one more sample."""
    hist = hist or {"n": 0, "sum": 0, "b": {}}
    buckets = dict(hist["b"])
    index = str(bucket(ms))
    buckets[index] = buckets.get(index, 0) + 1
    return {"n": hist["n"] + 1, "sum": hist["sum"] + ms, "b": buckets}


class AnalyticsView:
    """Throughput, latencies, error rate and utilization, by minute."""

    name = "analytics"

    def apply(self, change: Change, rows: Rows) -> None:
        event = change.event
        at = event.occurred_at
        counts: dict[str, int] = {}
        if change.verdict.outcome == "rejected":
            counts["rejected"] = 1
        elif change.verdict.accepted and event.event_type in FAILURES:
            counts["failed"] = 1
        before_state = change.before.state
        for task in change.tasks:
            self._task(change, before_state.task(task.task_id), task, counts, rows)
        if counts:
            key = join(event.queue, minute_part(at))
            row = rows.get(MINUTES, key) or dict.fromkeys(COUNTS, 0)
            rows.put(MINUTES, key, {name: row[name] + counts.get(name, 0) for name in COUNTS})

    def _task(self, change: Change, before: Task | None, after: Task, counts: dict[str, int], rows: Rows) -> None:
        at, queue = change.event.occurred_at, after.queue
        if before is None:
            counts["submitted"] = counts.get("submitted", 0) + 1
        elif before.state is not after.state and after.state in ENTERED:
            name = ENTERED[after.state]
            counts[name] = counts.get(name, 0) + 1
        ready_key = join(queue, after.task_id)
        waited = before is not None and before.state in WAITING and before.state is not after.state
        ready = rows.get(READY, ready_key) if waited else None
        if attempt_began(before, after):
            self._sample(rows, queue, "wait", at, after.task_type, wait_ms(ready, at))
        if attempt_ended(before, after):
            assert before is not None
            ran = run_ms(before, at)
            busy_key = join(queue, minute_part(at), before.agent_id)
            rows.put(BUSY, busy_key, (rows.get(BUSY, busy_key) or 0) + ran)
            if after.state is TaskState.completed:
                self._sample(rows, queue, "run", at, after.task_type, ran)
                self._sample(rows, queue, "done", at, after.task_type, max(0, at - after.submitted_at))
        entered = before is None or before.state is not after.state
        if entered and after.state is TaskState.running and after.attempt == 1:
            self._sample(rows, queue, "start", at, after.task_type, max(0, at - after.submitted_at))
        if before is None or before.state is not after.state:
            since = ready_since(before, after, at, ready)
            if since is None:
                if ready is not None:
                    rows.delete(READY, ready_key)
            elif since != ready:
                rows.put(READY, ready_key, since)

    @staticmethod
    def _sample(rows: Rows, queue: str, metric: str, at: int, task_type: str, ms: int) -> None:
        key = join(queue, metric, minute_part(at), task_type)
        rows.put(HIST, key, add_sample(rows.get(HIST, key), ms))

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        """Analytics are made of events only."""


# reading: what `projections.queries.analytics` returns


def percentiles(hists: list[dict[str, Any]]) -> dict[str, Any]:
    """Count, mean and p50/p95/p99 (nearest rank, as bucket values) of merged histograms."""
    merged: dict[int, int] = {}
    n = total = 0
    for hist in hists:
        n += hist["n"]
        total += hist["sum"]
        for index, count in hist["b"].items():
            merged[int(index)] = merged.get(int(index), 0) + count
    out: dict[str, Any] = {"count": n, "mean": total / n if n else None}
    order = sorted(merged.items())
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        rank, seen, value = max(1, math.ceil(q * n)), 0, None
        for index, count in order:
            seen += count
            if seen >= rank:
                value = round(bucket_value(index), 3)
                break
        out[name] = value
    return out


def summary(queue: str | None, minutes: int, last: int | None, counts: list[tuple[int, dict[str, int]]],
            hists: dict[tuple[str, str], list[dict[str, Any]]],
            busy: list[tuple[str, str, int, int]]) -> dict[str, Any]:
    """The analytics answer for a window of `minutes` minutes ending with minute `last`."""
    totals = {name: sum(row[name] for _, row in counts) for name in COUNTS}
    by_minute: dict[int, dict[str, int]] = {}
    for minute, row in counts:
        slot = by_minute.setdefault(minute, dict.fromkeys(COUNTS, 0))
        for name in COUNTS:
            slot[name] += row[name]
    attempts = totals["completed"] + totals["failed"]
    types = sorted({task_type for _, task_type in hists})
    window_ms = minutes * MINUTE_MS
    used: dict[tuple[str, str], list[int]] = {}
    for name, agent_id, ms, slots in busy:
        used.setdefault((name, agent_id), [0, slots])[0] += ms
    return {
        "queue": queue, "minutes": minutes,
        "from_ms": (last - minutes + 1) * MINUTE_MS if last is not None else None,
        "until_ms": (last + 1) * MINUTE_MS if last is not None else None,
        "totals": totals, "error_rate": totals["failed"] / attempts if attempts else None,
        "throughput": [{"minute": m * MINUTE_MS, **row} for m, row in sorted(by_minute.items())],
        "queue_wait_ms": percentiles([h for (metric, _), hs in hists.items() if metric == "wait" for h in hs]),
        "run_time_ms": percentiles([h for (metric, _), hs in hists.items() if metric == "run" for h in hs]),
        "by_type": {t: {"queue_wait_ms": percentiles(hists.get(("wait", t), [])),
                        "run_time_ms": percentiles(hists.get(("run", t), []))} for t in types},
        "agents": [{"agent_id": agent_id, "queue": name, "busy_ms": ms, "slots": slots,
                    "utilization": ms / (slots * window_ms) if slots else None}
                   for (name, agent_id), (ms, slots) in sorted(used.items())],
    }
