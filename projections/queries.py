"""Read functions over a projection Store: what the gateway's GET routes and streams answer.

Plain functions (no FastAPI), each a few key lookups or one range scan of an index table
(`projections.views`), never a scan of every task. Lists are paged with opaque cursors;
a cursor names the index it pages through, so a cursor from one filter is refused by
another (`BadCursor`). Positions are "partition:offset" strings, as in the API.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from typing import Any

from projections.store import Store
from projections.view import position_key
from projections.views import agents as A
from projections.views import analytics as AN
from projections.views import queues as Q
from projections.views import sessions as S
from projections.views import tasks as T
from projections.views import transcripts as TR
from projections.views.deadletters import DEAD_LETTERS
from projections.views.rejections import REJECTIONS
from projections.views.viewrows import SEP, event_json, join, task_key, verdict_json
from projections.views.timeindex import TIME_INDEX, TIME_MAX, partition_part, time_part
from taskfold.core.state import TaskState

PAGE = 500  # rows per store read when a long stream is read page by page
MAX_STAMP = 10**16 - 1  # times are 16-digit key parts
Page = tuple[list[dict[str, Any]], str | None]

__all__ = ["BadCursor", "agent_tasks", "analytics", "cut_offsets", "dead_letters", "event_json", "get_agent",
           "get_queue", "get_task", "list_agents", "list_queues", "list_tasks", "parse_position", "queue_chunks",
           "queue_events", "rejections", "task_at", "task_chunks", "task_history", "task_queue", "task_result",
           "verdict_json"]


class BadCursor(ValueError):
    """A cursor that is not one this API handed out for this list."""


def parse_position(text: str) -> tuple[int, int]:
    """(partition, offset) of "p:o"; ValueError naming the text otherwise."""
    partition, sep, offset = text.partition(":")
    try:
        p, o = int(partition), int(offset)
    except ValueError:
        p = o = -1
    if not sep or p < 0 or o < -1:
        raise ValueError(f"not a position (partition:offset): {text!r}")
    return p, o


def _after_position(prefix: str, position: str | None) -> str | None:
    if position is None:
        return None
    p, o = parse_position(position)
    return prefix + position_key(p, o) if o >= 0 else prefix + f"{p:04d}:"


# paging


def _cursor(index: str, key: str) -> str:
    raw = json.dumps([index, key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _from_cursor(cursor: str | None, index: str) -> str | None:
    if not cursor:
        return None
    try:
        name, key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error):
        raise BadCursor("cursor: not a cursor this API handed out") from None
    if name != index or not isinstance(key, str):
        raise BadCursor("cursor: it belongs to a list with other filters")
    return key


def _page(store: Store, table: str, prefix: str, index: str, limit: int, cursor: str | None, *,
          resolve: Callable[[str, Any], dict[str, Any] | None] = lambda key, row: row,
          keep: Callable[[dict[str, Any]], bool] = lambda row: True) -> Page:
    """One page of an index: rows resolved and filtered; the cursor of the next page or None."""
    index = f"{index}{SEP}{prefix}"  # a cursor pages one index under one prefix: other filters refuse it
    after = _from_cursor(cursor, index)
    budget = max(limit * 20, 1000)  # filtered lists stop early and hand out a cursor instead
    out: list[dict[str, Any]] = []
    last = None
    for scanned, (key, value) in enumerate(store.scan(table, prefix, after=after), start=1):
        last = key
        row = resolve(key, value)
        if row is not None and keep(row):
            out.append(row)
        if len(out) >= limit or scanned >= budget:
            break
    else:
        return out, None
    more = next(store.scan(table, prefix, after=last, limit=1), None) is not None
    return out, _cursor(index, last) if more else None  # type: ignore[arg-type]


# tasks


def task_queue(store: Store, task_id: str) -> str | None:
    """The queue of a task id (the first by name if several queues have one), or None."""
    for key, _ in store.scan(T.CLOCK, task_id + SEP, limit=1):
        return key[len(task_id) + 1:]
    for key, _ in store.scan(T.HISTORY, task_id + SEP, limit=1):
        return key.split(SEP)[1]
    return None


def get_task(store: Store, task_id: str, queue: str | None = None) -> dict[str, Any] | None:
    """The task's current row with its streamed output count (`chunks`), or None."""
    queue = queue or task_queue(store, task_id)
    row = store.get(T.TASKS, task_key(task_id, queue)) if queue else None
    if row is not None:
        row["chunks"] = store.get(TR.CHUNK_COUNTS, task_key(task_id, queue)) or {
            "chunks": 0, "by_attempt": {}, "last_position": None}
    return row


def task_history(store: Store, task_id: str, after: str | None = None, *, queue: str | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
    """History rows of a task after position `after` ("p:o"), in log order."""
    queue = queue or task_queue(store, task_id)
    if queue is None:
        return []
    prefix = join(task_id, queue) + SEP
    return [row for _, row in store.scan(T.HISTORY, prefix, after=_after_position(prefix, after), limit=limit)]


def task_at(store: Store, task_id: str, as_of_ms: int, *, queue: str | None = None) -> dict[str, Any] | None:
    """The task row as it was at `as_of_ms` (the fold of each partition up to its time cut), or None."""
    queue = queue or task_queue(store, task_id)
    if queue is None:
        return None
    prefix = join(task_id, queue) + SEP
    first = next(store.scan(T.HISTORY, prefix, limit=1), None)
    if first is None:
        return None
    partition = first[1]["partition"]
    end = cut_offsets(store, as_of_ms).get(partition, 0)
    for _, row in store.scan(T.HISTORY, prefix, after=prefix + position_key(partition, end), limit=1,
                             reverse=True):
        return row["task"]
    return None


def task_result(store: Store, task_id: str, queue: str | None = None) -> dict[str, Any] | None:
    """What a task ended with (`finished` False while it runs), or None for an unknown task."""
    row = get_task(store, task_id, queue)
    if row is None:
        return None
    return {"task_id": row["task_id"], "queue": row["queue"], "state": row["state"],
            "finished": TaskState(row["state"]).terminal, "result": row["result"], "error": row["error"],
            "reason": row["reason"], "attempt": row["attempt"], "finished_at": row["finished_at"]}


def list_tasks(store: Store, queue: str | None = None, state: str | None = None, session_id: str | None = None,
               correlation_id: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    """A page of task rows matching every filter given, through the most selective index."""
    state = TaskState(state).value if state is not None else None

    def keep(row: dict[str, Any]) -> bool:
        return ((queue is None or row["queue"] == queue) and (state is None or row["state"] == state)
                and (session_id is None or row["session_id"] == session_id)
                and (correlation_id is None or row["correlation_id"] == correlation_id))

    def by_ref(key: str, ref: dict[str, str]) -> dict[str, Any] | None:
        return store.get(T.TASKS, task_key(ref["task_id"], ref["queue"]))

    if session_id is not None:
        return _page(store, S.SESSIONS, session_id + SEP, "session", limit, cursor, resolve=by_ref, keep=keep)
    if correlation_id is not None:
        return _page(store, S.CORRELATIONS, correlation_id + SEP, "correlation", limit, cursor,
                     resolve=by_ref, keep=keep)
    if state is not None:
        prefix = join(state, queue) + SEP if queue is not None else state + SEP
        return _page(store, T.BY_STATE, prefix, "state", limit, cursor, keep=keep,
                     resolve=lambda key, tid: store.get(T.TASKS, task_key(tid, key.split(SEP)[1])))
    if queue is not None:
        return _page(store, T.BY_QUEUE, queue + SEP, "queue", limit, cursor,
                     resolve=lambda key, tid: store.get(T.TASKS, task_key(tid, queue)))
    return _page(store, T.TASKS, "", "all", limit, cursor)


def task_chunks(store: Store, task_id: str, after_position: str | None = None, *, queue: str | None = None,
                attempt: int | None = None) -> list[dict[str, Any]]:
    """A task's progress chunks after position `after_position` ("p:o" of `progress`), in log order."""
    queue = queue or task_queue(store, task_id)
    if queue is None:
        return []
    prefix = join(task_id, queue) + SEP
    rows = (row for _, row in store.scan(TR.CHUNKS, prefix, after=_after_position(prefix, after_position)))
    return [row for row in rows if attempt is None or row["chunk"]["attempt"] == attempt]


def _paged(store: Store, table: str, prefix: str, after: str | None) -> Iterator[tuple[str, Any]]:
    while True:
        page = list(store.scan(table, prefix, after=after, limit=PAGE))
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1][0]


def queue_events(store: Store, queue: str, after: str | None = None) -> Iterator[dict[str, Any]]:
    """History rows of every event of a queue after `after` ("p:o"), read page by page as iterated."""
    prefix = queue + SEP
    for key, pointer in _paged(store, T.QUEUE_EVENTS, prefix, _after_position(prefix, after)):
        if "event" in pointer:
            yield pointer
            continue
        row = store.get(T.HISTORY, join(pointer["task_id"], queue, key[len(prefix):]))
        if row is not None:
            yield row


def queue_chunks(store: Store, queue: str, after_position: str | None = None) -> Iterator[dict[str, Any]]:
    """Progress chunks of every task of a queue after `after_position`, read page by page as iterated."""
    prefix = queue + SEP
    for key, task_id in _paged(store, TR.QUEUE_CHUNKS, prefix, _after_position(prefix, after_position)):
        row = store.get(TR.CHUNKS, join(task_id, queue, key[len(prefix):]))
        if row is not None:
            yield row


# time


def cut_offsets(store: Store, until_ms: int) -> dict[int, int]:
    """{partition: offset} where `Cut(until_ms=...)` closes each partition of `events` the store reflects."""
    stamp = time_part(min(max(until_ms, -1), MAX_STAMP))
    out = {}
    for partition, next_offset in sorted(store.offsets("events").items()):
        prefix = partition_part(partition) + SEP
        first = next(store.scan(TIME_INDEX, prefix, after=prefix + stamp, limit=1), None)
        out[partition] = first[1] if first is not None else next_offset
    return out


# agents


def _agent(store: Store, agent_id: str, seats: list[dict[str, Any]]) -> dict[str, Any]:
    totals = store.get(A.TOTALS, agent_id) or {"tasks": 0, "attempts": 0}
    held = sum(1 for _ in store.scan(A.HOLDING, agent_id + SEP))
    return {"agent_id": agent_id, "queues": seats, "heartbeat": store.get(A.BEATS, agent_id),
            "active": any(seat["active"] for seat in seats), "slots": sum(s["slots"] for s in seats if s["active"]),
            "load": sum(seat["load"] for seat in seats), "held_now": held, "held_ever": totals["tasks"],
            "attempts": totals["attempts"]}


def list_agents(store: Store) -> list[dict[str, Any]]:
    """Every agent seen in a seat or a heartbeat, by id."""
    seats: dict[str, list[dict[str, Any]]] = {}
    for _, seat in store.scan(A.SEATS):
        seats.setdefault(seat["agent_id"], []).append(seat)
    for agent_id, _ in store.scan(A.BEATS):
        seats.setdefault(agent_id, [])
    return [_agent(store, agent_id, seats[agent_id]) for agent_id in sorted(seats)]


def get_agent(store: Store, agent_id: str) -> dict[str, Any] | None:
    """An agent's seats per queue, heartbeat and task counts, or None if never seen."""
    seats = [seat for _, seat in store.scan(A.SEATS, agent_id + SEP)]
    if not seats and store.get(A.BEATS, agent_id) is None:
        return None
    return _agent(store, agent_id, seats)


def agent_tasks(store: Store, agent_id: str, *, held: bool = False, limit: int = 50,
                cursor: str | None = None) -> Page:
    """A page of the tasks an agent holds now (`held`) or ever held."""
    if held:
        return _page(store, A.HOLDING, agent_id + SEP, "held", limit, cursor)
    return _page(store, A.AGENT_TASKS, agent_id + SEP, "agent_tasks", limit, cursor)


# queues


def _queue(store: Store, row: dict[str, Any], now_ms: int | None) -> dict[str, Any]:
    queue = row["queue"]
    oldest = next(store.scan(Q.WAITING, queue + SEP, limit=1), None)
    waiting = oldest[1] if oldest is not None else None
    return {**row, "depth": sum(row["waiting_by_priority"].values()), "oldest_waiting": waiting,
            "oldest_waiting_age_ms": max(0, now_ms - waiting["submitted_at"]) if waiting and now_ms else None}


def list_queues(store: Store, now_ms: int | None = None) -> list[dict[str, Any]]:
    """Every queue with its depth, totals and oldest waiting task."""
    return [_queue(store, row, now_ms) for _, row in store.scan(Q.QUEUES)]


def get_queue(store: Store, queue: str, now_ms: int | None = None) -> dict[str, Any] | None:
    """One queue with its agents' seats, or None if no event of it was applied."""
    row = store.get(Q.QUEUES, queue)
    if row is None:
        return None
    agents = [store.get(A.SEATS, join(agent_id, queue)) for _, agent_id in store.scan(A.QUEUE_AGENTS, queue + SEP)]
    return {**_queue(store, row, now_ms), "agents": [seat for seat in agents if seat is not None]}


# analytics


def analytics(store: Store, queue: str | None = None, minutes: int = 60, until_ms: int | None = None) -> dict[str, Any]:
    """Throughput, error rate, wait and run time percentiles and agent utilization over a window.

    The window is the `minutes` whole minutes ending with the minute of `until_ms`, by
    default the newest event's: an as-of store answers for its own moment.
    """
    until = until_ms if until_ms is not None else max((top for _, top in store.scan(TIME_MAX)), default=None)
    queues = [queue] if queue is not None else [key for key, _ in store.scan(Q.QUEUES)]
    if until is None:
        return AN.summary(queue, minutes, None, [], {}, [])
    last = until // AN.MINUTE_MS
    first = last - minutes + 1
    counts: list[tuple[int, dict[str, int]]] = []
    hists: dict[tuple[str, str], list[dict[str, Any]]] = {}
    busy: list[tuple[str, str, int, int]] = []
    for name in queues:
        counts += [(int(k.split(SEP)[1]), row) for k, row in _minutes(store, AN.MINUTES, name + SEP, first, last)]
        for metric in ("wait", "run"):
            for key, hist in _minutes(store, AN.HIST, join(name, metric) + SEP, first, last):
                hists.setdefault((metric, key.split(SEP)[3]), []).append(hist)
        for key, ms in _minutes(store, AN.BUSY, name + SEP, first, last):
            agent_id = key.split(SEP)[2]
            seat = store.get(A.SEATS, join(agent_id, name))
            busy.append((name, agent_id, ms, seat["slots"] if seat else 0))
    return AN.summary(queue, minutes, last, counts, hists, busy)


def _minutes(store: Store, table: str, prefix: str, first: int, last: int) -> Iterator[tuple[str, Any]]:
    """Rows of a minute-keyed table from minute `first` to `last` (the minute is the part after `prefix`)."""
    start = prefix + f"{first - 1:010d}\uffff" if first > 0 else None  # past every key of minute first-1
    end = f"{last:010d}"
    for key, row in store.scan(table, prefix, after=start):
        if key[len(prefix):len(prefix) + 10] > end:
            return
        yield key, row


# audit lists


def rejections(store: Store, limit: int = 50, cursor: str | None = None) -> Page:
    """A page of rejected events, in log order per partition."""
    return _page(store, REJECTIONS, "", "rejections", limit, cursor)


def dead_letters(store: Store, queue: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    """A page of the tasks dead-lettered now (all queues, or one)."""
    prefix = queue + SEP if queue is not None else ""
    return _page(store, DEAD_LETTERS, prefix, "dead_letters", limit, cursor)
