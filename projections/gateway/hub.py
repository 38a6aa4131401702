"""The live feed behind the SSE streams: cursors, frames, and the hub that fans out applied records.

The projector calls `Hub.publish` after each committed batch; each subscriber (one open
stream) gets the items of its task or queue in a bounded buffer. See `sse` for how a stream
combines the hub with the stored history to resume without a gap or a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fastapi.sse import format_sse_event

from projections import queries
from projections.projector import EVENTS, PROGRESS, Item
from projections.store import Store
from projections.view import Change, Telemetry
from projections.views.transcripts import CHUNK_IDS
from taskfold.core.state import TaskState
from taskfold.core.telemetry import ProgressChunk

log = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far a stream has delivered: events and progress offsets of one partition."""

    partition: int
    events: int = -1
    progress: int = -1

    def __str__(self) -> str:
        if self.progress < 0:
            return f"{self.partition}:{self.events}"
        return f"{self.partition}:{self.events}.{self.progress}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """Parse `p:e` or `p:e.c`; ValueError when it is neither."""
        partition, sep, rest = text.strip().partition(":")
        events, _, progress = rest.partition(".")
        try:
            cursor = cls(int(partition), int(events), int(progress) if progress else -1)
        except ValueError:
            cursor = None
        if not sep or cursor is None or cursor.partition < 0 or min(cursor.events, cursor.progress) < -1:
            raise ValueError(f"not a stream cursor (p:events_offset or p:events_offset.progress_offset): {text!r}")
        return cursor

    def admits(self, frame: Frame) -> bool:
        """True when the frame is past this cursor (not delivered yet)."""
        return frame.offset > (self.events if frame.topic == EVENTS else self.progress)

    def past(self, frame: Frame) -> Cursor:
        """The cursor once the frame is delivered."""
        if frame.topic == EVENTS:
            return replace(self, events=max(self.events, frame.offset))
        return replace(self, progress=max(self.progress, frame.offset))


@dataclass(frozen=True, slots=True)
class Frame:
    """One message of a stream: where it is in the log, its SSE name and JSON data."""

    topic: str  # EVENTS or PROGRESS
    partition: int
    offset: int
    name: str
    data: dict[str, Any]
    occurred_at: int = 0
    ended: tuple[tuple[str, TaskState], ...] = ()  # (task, terminal state) this event left terminal

    def ends(self, task_id: str | None) -> TaskState | None:
        """The terminal state this event left the task in, if it did."""
        return next((state for task, state in self.ended if task == task_id), None)

    def encode(self, cursor: Cursor) -> bytes:
        return format_sse_event(data_str=json.dumps(self.data, separators=(",", ":")), event=self.name,
                                id=str(cursor))


def frame_of(item: Item) -> Frame | None:
    """The frame of a committed projector item; None for items streams do not carry."""
    if isinstance(item, Change):
        ended = tuple((t.task_id, t.state) for t in item.tasks if t.state.terminal) if item.verdict.accepted else ()
        return Frame(EVENTS, item.partition, item.offset, item.event.event_type,
                     {"position": item.position, "event": queries.event_json(item.event),
                      "verdict": queries.verdict_json(item.verdict)}, item.event.occurred_at, ended)
    if isinstance(item, Telemetry) and isinstance(item.record, ProgressChunk):
        return chunk_frame(item.partition, item.offset, item.record.model_dump(mode="json"))
    return None


def chunk_frame(partition: int, offset: int, chunk: dict[str, Any]) -> Frame:
    """The frame of a progress chunk (live or from history)."""
    return Frame(PROGRESS, partition, offset, "progress", {"position": f"{partition}:{offset}", "chunk": chunk},
                 chunk.get("occurred_at", 0))


def event_frame(row: dict[str, Any]) -> Frame:
    """The frame of a history row of `events` (same data as the live frame of that event)."""
    event = row["event"]
    return Frame(EVENTS, row["partition"], row["offset"], event["type"],
                 {"position": row["position"], "event": event, "verdict": row["verdict"]}, event.get("occurred_at", 0))


def _keys_of(item: Item) -> tuple[str, set[str]] | None:
    """(queue, task ids) an item is about, or None when no stream carries it."""
    if isinstance(item, Change):
        tasks = {t.task_id for t in item.tasks}
        if item.event.task is not None:
            tasks.add(item.event.task)
        return item.event.queue, tasks
    if isinstance(item, Telemetry) and isinstance(item.record, ProgressChunk):
        return item.record.queue, {item.record.task_id}
    return None


class Subscription:
    """A stream's bounded buffer of frames from the hub; `dropped` once it overflowed."""

    def __init__(self, queue: str, task_id: str | None, capacity: int) -> None:
        self.queue, self.task_id = queue, task_id
        self.frames: asyncio.Queue[Frame | None] = asyncio.Queue(capacity)  # None: woken to stop
        self.dropped = False

    async def next(self, timeout: float) -> Frame | None:
        """The next buffered frame, or None after `timeout` seconds without one."""
        try:
            return self.frames.get_nowait()
        except asyncio.QueueEmpty:
            pass
        try:
            return await asyncio.wait_for(self.frames.get(), timeout)
        except TimeoutError:
            return None


class Hub:
    """Fans committed items out to the streams watching their task or queue."""

    def __init__(self, capacity: int = 1000, heartbeat_s: float = 15.0, drain_s: float = 5.0,
                 store: Store | None = None) -> None:
        self.capacity, self.heartbeat_s, self.drain_s = capacity, heartbeat_s, drain_s
        self.store = store  # to tell a chunk sent twice, which history keeps once
        self._queues: dict[str, set[Subscription]] = {}
        self._tasks: dict[tuple[str, str], set[Subscription]] = {}
        self.dropped = 0  # subscriptions dropped for falling behind
        self.closed = False

    @property
    def subscribers(self) -> int:
        return sum(map(len, self._queues.values())) + sum(map(len, self._tasks.values()))

    def subscribe(self, queue: str, task_id: str | None = None) -> Subscription:
        """Start buffering the frames of a task (or of a whole queue when task_id is None)."""
        sub = Subscription(queue, task_id, self.capacity)
        self._index(sub).setdefault(self._key(sub), set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop buffering for a subscription (idempotent)."""
        index, key = self._index(sub), self._key(sub)
        subs = index.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del index[key]

    def publish(self, items: Sequence[Item]) -> None:
        """Projector listener: offer each committed item to the streams it concerns. Never raises."""
        if not (self._queues or self._tasks):
            return
        try:
            for item in items:
                keys = _keys_of(item)
                targets = self._targets(*keys) if keys is not None else []
                frame = frame_of(item) if targets and not self._repeated(item) else None
                if frame is not None:
                    self._offer(targets, frame)
        except Exception:  # a listener that raises would stop the projection
            log.exception("the SSE hub could not publish a batch; streams will catch up from the store")
            for sub in self._all():
                self._drop(sub)

    def _repeated(self, item: Item) -> bool:
        """True for a chunk the transcripts view kept an earlier copy of (same chunk_id)."""
        if self.store is None or not isinstance(item, Telemetry) or not isinstance(item.record, ProgressChunk):
            return False
        first = self.store.get(CHUNK_IDS, item.record.chunk_id)
        return first is not None and first != f"{item.partition}:{item.offset}"

    def deliver(self, queue: str, task_ids: Iterable[str], frame: Frame) -> None:
        """Offer one frame about a queue and some of its tasks to the streams watching them."""
        self._offer(self._targets(queue, task_ids), frame)

    def close(self) -> None:
        """End every stream (on shutdown): each is dropped and ends at its next message."""
        self.closed = True
        for sub in self._all():
            self._drop(sub)

    def _all(self) -> list[Subscription]:
        return [s for subs in (*self._queues.values(), *self._tasks.values()) for s in subs]

    def _targets(self, queue: str, task_ids: Iterable[str]) -> list[Subscription]:
        out = list(self._queues.get(queue, ()))
        for task_id in set(task_ids):
            out.extend(self._tasks.get((queue, task_id), ()))
        return out

    def _offer(self, targets: Iterable[Subscription], frame: Frame) -> None:
        for sub in targets:
            try:
                sub.frames.put_nowait(frame)
            except asyncio.QueueFull:
                self.dropped += 1
                self._drop(sub)

    def _drop(self, sub: Subscription) -> None:
        sub.dropped = True
        self.unsubscribe(sub)
        try:
            sub.frames.put_nowait(None)  # wake a stream waiting for its next frame
        except asyncio.QueueFull:
            pass  # a full buffer is being read, and the reader sees `dropped` next

    def _index(self, sub: Subscription) -> dict:
        return self._queues if sub.task_id is None else self._tasks

    @staticmethod
    def _key(sub: Subscription) -> Any:
        return sub.queue if sub.task_id is None else (sub.queue, sub.task_id)
