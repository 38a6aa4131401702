"""Server-Sent Event streams of a task or a queue: lifecycle events with verdicts, and progress chunks.

A client that drops its connection must be able to resume with no gap and no duplicate,
and a slow client must never hold the projection up; so every SSE id is a cursor over both
topics of the queue's partition, and a stream reads the store and the live hub in an order
that loses nothing (`stream`). The README's "Following tasks: Server-Sent Events" says what
a client sees: the cursors, where streams start and end, and the messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, Query, Response
from fastapi.sse import EventSourceResponse, format_sse_event

from projections import queries
from projections.gateway.deps import ReaderDep, Runtime, RuntimeDep
from projections.gateway.errors import ApiError, ErrorBody
from projections.gateway.writes import queue_of, read_only_error
from projections.projector import EVENTS, PROGRESS
from taskfold.broker.topics import queue_partition
from taskfold.core.state import TaskState

from projections.gateway.hub import (  # noqa: F401 - Subscription and frame_of re-exported for the tests
    KEEPALIVE, Cursor, Frame, Hub, Subscription, chunk_frame, event_frame, frame_of,
)

log = logging.getLogger(__name__)

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def mount(rt: Runtime) -> Hub:
    """The runtime's hub, created and registered as a projector listener on first use (idempotent)."""
    if rt.hub is None:
        rt.hub = Hub()
    if rt.hub.store is None:
        rt.hub.store = rt.live.store
    projector = getattr(rt.live, "projector", None)  # None when serving a prebuilt store
    if projector is not None and rt.hub.publish not in projector.listeners:
        projector.listeners.append(rt.hub.publish)
    return rt.hub


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The streams router's lifespan, inside the app's: mount the hub; at shutdown, end every stream."""
    hub = mount(app.state.runtime)
    try:
        yield
    finally:
        hub.close()


router = APIRouter(tags=["streams"], lifespan=lifespan)


@dataclass(frozen=True, slots=True)
class Source:
    """What one stream watches (a queue, or one task of it) and where its records live."""

    rt: Runtime
    queue: str
    task_id: str | None
    partition: int  # of `events`
    progress_partition: int  # of `progress`

    def owns(self, frame: Frame) -> bool:
        """True when the frame is in this stream's partitions (its offsets mean something to the cursor)."""
        return frame.partition == (self.partition if frame.topic == EVENTS else self.progress_partition)

    def history(self, cursor: Cursor) -> Iterator[Frame]:
        """Committed events and chunks after the cursor, merged by time, each topic in log order."""
        return _merge(self._events(cursor), self._chunks(cursor))

    def _events(self, cursor: Cursor) -> Iterator[Frame]:
        store = self.rt.live.store
        after = f"{self.partition}:{cursor.events}" if cursor.events >= 0 else None
        if self.task_id is not None:
            rows = queries.task_history(store, self.task_id, after, queue=self.queue)
        else:
            rows = queries.queue_events(store, self.queue, after)
        for row in rows:
            frame = event_frame(row)
            if self.owns(frame) and cursor.admits(frame):
                yield frame

    def _chunks(self, cursor: Cursor) -> Iterator[Frame]:
        store = self.rt.live.store
        after = f"{self.progress_partition}:{cursor.progress}" if cursor.progress >= 0 else None
        if self.task_id is not None:
            rows = queries.task_chunks(store, self.task_id, after, queue=self.queue)
        else:
            rows = queries.queue_chunks(store, self.queue, after)
        for row in rows:
            frame = chunk_frame(row["partition"], row["offset"], row["chunk"])
            if self.owns(frame) and cursor.admits(frame):
                yield frame

    def terminal(self) -> TaskState | None:
        """The task's state when it is terminal now, else None."""
        task = self.rt.live.projector.task(self.queue, self.task_id) if self.task_id else None
        return task.state if task is not None and task.state.terminal else None

    async def drained(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until the chunks appended so far to our progress partition are applied.

        An agent appends a task's chunks before its outcome, but the projection tails
        `events` and `progress` separately, so the terminal event can be applied first.
        """
        live, pp = self.rt.live, self.progress_partition
        try:
            ends = await asyncio.wait_for(self.rt.log.reader.end_offsets(live.topics.progress, [pp]), timeout)
            target = ends[pp]
            await live.wait_for(lambda: live.projector.next_offset(PROGRESS, pp) >= target, timeout)
        except Exception as exc:  # noqa: BLE001 - ending a stream a little early is not an error
            log.warning("progress of %s not drained before its stream ended: %s", self.queue, exc)


def _merge(a: Iterator[Frame], b: Iterator[Frame]) -> Iterator[Frame]:
    """Two log-ordered frame sequences merged by time, without reordering either."""
    x, y = next(a, None), next(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x.occurred_at <= y.occurred_at):
            yield x  # type: ignore[misc]
            x = next(a, None)
        else:
            yield y
            y = next(b, None)


def _end(state: TaskState) -> bytes:
    # No id: the client's Last-Event-ID stays at the last real message.
    return format_sse_event(data_str=json.dumps({"reason": "terminal", "state": state.value}, separators=(",", ":")),
                            event="end")


async def stream(hub: Hub, source: Source, cursor: Cursor, *, follow: bool = True,
                 checkpoint: bool = False) -> AsyncIterator[bytes]:
    """The SSE bytes of a stream from `cursor`, resumed without a gap or a duplicate.

    1. Subscribe to the hub first, so every item committed from now on is buffered.
    2. Read the history after the cursor from the store; the projector commits a batch
       before it publishes it, so whatever the store read misses is in the buffer.
    3. Send the history, then the buffer, then live items, skipping anything at or below
       the cursor of its topic; the cursor advances with every message sent.
    4. Dropped from the hub for falling behind (a slow client): back to 1 from the cursor.
    """
    if checkpoint:
        yield f"id: {cursor}\n\n".encode()
    ending = False
    while not hub.closed:
        sub = hub.subscribe(source.queue, source.task_id)  # 1. buffer first
        try:
            for frame in source.history(cursor):  # 2. then read the store
                cursor = cursor.past(frame)
                yield frame.encode(cursor)
            if not follow:
                return
            state = source.terminal()
            if state is not None:
                await source.drained(hub.drain_s)
                ending = True
            while not sub.dropped:  # 3. then the buffer and live items
                frame = await sub.next(0.0 if ending else hub.heartbeat_s)
                if frame is None and sub.dropped:
                    break
                if frame is None:
                    if ending:
                        yield _end(state or TaskState.completed)
                        return
                    yield KEEPALIVE
                    continue
                if not (source.owns(frame) and cursor.admits(frame)):
                    continue
                cursor = cursor.past(frame)
                yield frame.encode(cursor)
                if not ending and frame.ends(source.task_id) is not None:
                    state = frame.ends(source.task_id)
                    await source.drained(hub.drain_s)
                    ending = True
        finally:
            hub.unsubscribe(sub)
        # 4. dropped for falling behind: catch up from the store with a fresh subscription


def partitions(rt: Runtime, queue: str) -> tuple[int, int]:
    """(events partition, progress partition) of a queue; 503 until the projection has started."""
    counts = [len(rt.live.ends.get(role) or ()) for role in (EVENTS, PROGRESS)]
    if not all(counts):
        raise ApiError(503, "not_ready", "the projection has not started yet; retry shortly")
    return queue_partition(queue, counts[0]), queue_partition(queue, counts[1])


def resume_cursor(text: str | None, partition: int) -> Cursor | None:
    """The cursor a client sent back, checked against the stream's partition; 400 if unusable."""
    if not text:
        return None
    try:
        cursor = Cursor.parse(text)
    except ValueError as exc:
        raise ApiError(400, "bad_last_event_id", str(exc), [{"field": "Last-Event-ID", "reason": str(exc)}]) from None
    if cursor.partition != partition:
        reason = f"the id is for partition {cursor.partition}, this stream is on partition {partition}"
        raise ApiError(400, "bad_last_event_id", reason, [{"field": "Last-Event-ID", "reason": reason}])
    return cursor


def _response(hub: Hub, source: Source, cursor: Cursor, *, follow: bool, checkpoint: bool = False) -> Response:
    return EventSourceResponse(stream(hub, source, cursor, follow=follow, checkpoint=checkpoint),
                               headers=STREAM_HEADERS)


LastEventId = Annotated[str | None, Header(description="resume after this id (a cursor sent by an earlier stream)")]
LastEventIdQuery = Annotated[str | None, Query(alias="last_event_id", description="like the Last-Event-ID header")]
Follow = Annotated[bool, Query(description="false: send what is stored after the cursor, then end")]
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "a text/event-stream; each id is a resumable cursor",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    400: {"model": ErrorBody, "description": "Last-Event-ID is not a cursor of this stream"},
    404: {"model": ErrorBody, "description": "unknown task or queue"},
}


@router.get("/v1/tasks/{task_id}/events", response_class=Response, responses={
    **STREAM_RESPONSES, 204: {"description": "the task is terminal and nothing is left after the cursor"}})
async def task_events(
    task_id: str, principal: ReaderDep, rt: RuntimeDep, last_event_id: LastEventId = None,
    resume: LastEventIdQuery = None,
    queue: Annotated[str | None, Query(description="the task's queue, if its id is used in several")] = None,
    follow: Follow = True,
) -> Response:
    """Lifecycle events (with verdicts) and progress chunks of one task, from its first event or the cursor."""
    hub = mount(rt)
    name = queue_of(rt, task_id, queue)
    p, pp = partitions(rt, name)
    cursor = resume_cursor(last_event_id or resume, p) or Cursor(p)
    source = Source(rt, name, task_id, p, pp)
    if source.terminal() is not None:
        await source.drained(hub.drain_s)
        if next(source.history(cursor), None) is None:
            return Response(status_code=204)
    return _response(hub, source, cursor, follow=follow)


@router.get("/v1/queues/{queue}/events", response_class=Response, responses=STREAM_RESPONSES)
async def queue_events(
    queue: str, principal: ReaderDep, rt: RuntimeDep, last_event_id: LastEventId = None,
    resume: LastEventIdQuery = None,
    start: Annotated[Literal["now", "beginning"], Query(alias="from", description="where to start without a cursor")
                     ] = "now",
    follow: Follow = True,
) -> Response:
    """Every event of a queue (with verdicts) and its progress chunks, live or from the cursor."""
    hub = mount(rt)
    if rt.live.projector is None:
        raise read_only_error()
    if queue not in rt.live.projector.queues:
        raise ApiError(404, "not_found", f"unknown queue {queue} (no event of it has been applied)")
    p, pp = partitions(rt, queue)
    cursor = resume_cursor(last_event_id or resume, p)
    source = Source(rt, queue, None, p, pp)
    if cursor is not None or start == "beginning":
        return _response(hub, source, cursor or Cursor(p), follow=follow)
    projector = rt.live.projector  # live: everything applied so far counts as delivered
    now = Cursor(p, projector.next_offset(EVENTS, p) - 1, projector.next_offset(PROGRESS, pp) - 1)
    return _response(hub, source, now, follow=follow, checkpoint=True)
