"""What the dashboard's pages show, read from a projection store (live or as of a cut).

Plain functions over `projections.queries` and the views' tables, like the read API: a
few key lookups or bounded range scans each, never a scan of every task, so the pages
stay fast however many tasks the store holds. Lists page by key (keyset cursors).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from projections import queries
from projections.store import Store
from projections.views import agents as A
from projections.views import analytics as AN
from projections.views import sessions as S
from projections.views import tasks as T
from projections.views import transcripts as TR
from projections.views.viewrows import SEP, join, task_key
from projections.views.timeindex import TIME_MAX

SERIES_BUCKETS = 12  # points of each latency series over the window
HELD_SHOWN = 20  # tasks held listed per agent
HISTORY_MAX = 2000  # events of one task shown on its page
PRIORITIES = ("critical", "high", "medium", "low")


def newest_ms(store: Store) -> int | None:
    """The newest event time the store reflects (an as-of store: its own moment)."""
    return max((top for _, top in store.scan(TIME_MAX)), default=None)


def _latency_series(store: Store, queue: str, metric: str, first: int, last: int) -> list[dict[str, Any]]:
    """p50/p95/p99 of a histogram metric per bucket of minutes from minute `first` to `last`."""
    width = max(1, (last - first + 1) // SERIES_BUCKETS)
    buckets: dict[int, list[dict[str, Any]]] = {}
    for key, hist in queries._minutes(store, AN.HIST, join(queue, metric) + SEP, first, last):
        minute = int(key.split(SEP)[2])
        buckets.setdefault(first + (minute - first) // width * width, []).append(hist)
    return [{"minute": start * AN.MINUTE_MS, **AN.percentiles(hists)} for start, hists in sorted(buckets.items())]


def _window(store: Store, queue: str, minutes: int, last: int) -> dict[str, Any]:
    """Throughput, rates and the end-to-end latencies of one queue over the window ending at minute `last`."""
    first = last - minutes + 1
    stats = queries.analytics(store, queue=queue, minutes=minutes, until_ms=last * AN.MINUTE_MS)
    totals = stats["totals"]
    finished = totals["completed"] + totals["dead_lettered"] + totals["cancelled"]
    latency = {}
    for metric in ("start", "done"):
        hists = [h for _, h in queries._minutes(store, AN.HIST, join(queue, metric) + SEP, first, last)]
        latency[metric] = {**AN.percentiles(hists), "series": _latency_series(store, queue, metric, first, last)}
    return {"from_ms": stats["from_ms"], "until_ms": stats["until_ms"], "throughput": stats["throughput"],
            "totals": totals, "error_rate": stats["error_rate"],
            "dead_letter_rate": totals["dead_lettered"] / finished if finished else None,
            "submit_to_start_ms": latency["start"], "submit_to_complete_ms": latency["done"],
            "queue_wait_ms": stats["queue_wait_ms"], "run_time_ms": stats["run_time_ms"]}


def breaker(seat: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """A seat's circuit breaker: closed, open until a time, or half-open (a probe task runs)."""
    until = seat.get("quarantined_until")
    if until is not None and until > now_ms:
        return {"state": "open", "until": until, "reason": seat.get("quarantine_reason")}
    if seat.get("probe_task"):
        return {"state": "half-open", "until": None, "probe_task": seat["probe_task"]}
    return {"state": "closed", "until": None}


def agents(store: Store, now_ms: int) -> list[dict[str, Any]]:
    """Every agent with its seats' breakers, utilization now and the tasks it holds (the first few)."""
    out = []
    for agent in queries.list_agents(store):
        seats = [{**seat, "breaker": breaker(seat, now_ms)} for seat in agent["queues"]]
        held, _ = queries.agent_tasks(store, agent["agent_id"], held=True, limit=HELD_SHOWN)
        out.append({**agent, "queues": seats, "held": held,
                    "utilization": agent["load"] / agent["slots"] if agent["slots"] else None,
                    "quarantined": any(s["breaker"]["state"] == "open" for s in seats)})
    return out


def overview(store: Store, now_ms: int, minutes: int = 60) -> dict[str, Any]:
    """Per queue: depth by priority, running, throughput, latencies and rates; agents online, busy, quarantined."""
    newest = newest_ms(store)
    last = (newest if newest is not None else now_ms) // AN.MINUTE_MS
    queues = []
    for row in queries.list_queues(store, now_ms):
        states = row["states"]
        queues.append({**row, "running": states.get("running", 0), "assigned": states.get("assigned", 0),
                       "depth_by_priority": {p: row["waiting_by_priority"].get(p, 0) for p in PRIORITIES},
                       "window": _window(store, row["queue"], minutes, last)})
    fleet = agents(store, now_ms)
    online = [a for a in fleet if a["active"]]
    return {"queues": queues, "minutes": minutes, "newest_event_at": newest,
            "agents": {"total": len(fleet), "online": len(online), "busy": sum(1 for a in online if a["load"]),
                       "quarantined": sum(1 for a in fleet if a["quarantined"])}}


def _search(store: Store, text: str, limit: int) -> list[dict[str, Any]]:
    """Tasks whose id starts with `text` (an exact id first), then tasks of the correlation id `text`."""
    found: dict[str, dict[str, Any]] = {}
    for key, row in store.scan(T.TASKS, text, limit=limit):
        found[key] = row
    for key, ref in store.scan(S.CORRELATIONS, text + SEP, limit=limit):
        row = store.get(T.TASKS, task_key(ref["task_id"], ref["queue"]))
        if row is not None:
            found.setdefault(task_key(ref["task_id"], ref["queue"]), row)
    return list(found.values())[:limit]


def tasks(store: Store, *, queue: str | None = None, state: str | None = None, priority: str | None = None,
          agent: str | None = None, session_id: str | None = None, q: str | None = None,
          since_ms: int | None = None, until_ms: int | None = None, limit: int = 50,
          cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """A page of tasks through the most selective index (agent, session, state, queue); the
    other filters are checked row by row.

    A sparse filter never scans more than the page budget of `projections.queries` (20 rows
    per row asked, at least 1,000): the page comes back shorter, with a cursor to go on from.
    """
    if q:
        rows = [r for r in _search(store, q, limit) if _keep(r, queue, state, priority, None, since_ms, until_ms)]
        return rows, None
    def keep(row: dict[str, Any]) -> bool:
        return _keep(row, queue, state, priority, session_id, since_ms, until_ms)

    def by_ref(key: str, ref: dict[str, Any]) -> dict[str, Any] | None:
        return store.get(T.TASKS, task_key(ref["task_id"], ref["queue"]))

    if agent is not None:
        table, prefix, resolve = A.AGENT_TASKS, agent + SEP, by_ref
    elif session_id is not None:
        table, prefix, resolve = S.SESSIONS, session_id + SEP, by_ref
    elif state is not None:
        table, prefix = T.BY_STATE, (join(state, queue) if queue is not None else state) + SEP
        resolve = lambda key, tid: store.get(T.TASKS, task_key(tid, key.split(SEP)[1]))  # noqa: E731
    elif queue is not None:
        table, prefix = T.BY_QUEUE, queue + SEP
        resolve = lambda key, tid: store.get(T.TASKS, task_key(tid, queue))  # noqa: E731
    else:
        table, prefix, resolve = T.TASKS, "", lambda key, row: row
    return queries._page(store, table, prefix, f"ui:{table}", limit, cursor, resolve=resolve, keep=keep)


def _keep(row: dict[str, Any], queue: str | None, state: str | None, priority: str | None,
          session_id: str | None, since_ms: int | None, until_ms: int | None) -> bool:
    return ((queue is None or row["queue"] == queue) and (state is None or row["state"] == state)
            and (priority is None or row["priority"] == priority)
            and (session_id is None or row["session_id"] == session_id)
            and (since_ms is None or row["submitted_at"] >= since_ms)
            and (until_ms is None or row["submitted_at"] <= until_ms))


def _chunks(store: Store, task_id: str, queue: str) -> Iterator[dict[str, Any]]:
    for _, row in store.scan(TR.CHUNKS, join(task_id, queue) + SEP, limit=HISTORY_MAX):
        yield {"position": row["position"], "chunk": row["chunk"]}


def task_detail(store: Store, task_id: str) -> dict[str, Any] | None:
    """A task, every event about it with its verdict, and its progress transcript; None if unknown."""
    row = queries.get_task(store, task_id)
    if row is None:
        return None
    history = queries.task_history(store, task_id, queue=row["queue"], limit=HISTORY_MAX)
    events = [{"position": h["position"], "event": h["event"], "verdict": h["verdict"]} for h in history]
    return {"task": {**row, "payload": _json(row["payload"]), "result": _json(row["result"])}, "events": events,
            "chunks": list(_chunks(store, task_id, row["queue"]))}


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
