"""The SSE hub and stream protocol without a broker: cursors, fan-out, overflow, and the
resume rule (history first, then the buffer, nothing at or below the cursor twice)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field

import pytest

from projections.gateway import sse
from projections.gateway import hub as hub_module
from projections.gateway.sse import Cursor, Frame, Hub, stream
from projections.projector import EVENTS, PROGRESS, Projector
from projections.store import Store
from projections.view import Telemetry
from taskfold.log.eventlog import Poison, Recorded
from taskfold.core.state import TaskState
from taskfold.core.telemetry import ChunkKind, Heartbeat, ProgressChunk
from taskfold.core.testing import Events

P = 2  # the partition every frame of these tests is in


def ev(offset: int, task: str = "t1", *, ended: bool = False, at: int | None = None) -> Frame:
    return Frame(EVENTS, P, offset, "TaskStarted", {"position": f"{P}:{offset}", "task": task},
                 at if at is not None else offset * 10, ((task, TaskState.completed),) if ended else ())


def ch(offset: int, task: str = "t1", at: int | None = None) -> Frame:
    return Frame(PROGRESS, P, offset, "progress", {"position": f"{P}:{offset}", "task": task, "chunk": {}},
                 at if at is not None else offset * 10 + 5)


@pytest.mark.parametrize("text, cursor", [
    ("3:17", Cursor(3, 17)), ("3:17.5", Cursor(3, 17, 5)), ("0:-1.4", Cursor(0, -1, 4)), (" 1:0 ", Cursor(1, 0)),
])
def test_a_cursor_parses_and_prints_back(text: str, cursor: Cursor) -> None:
    assert Cursor.parse(text) == cursor
    assert Cursor.parse(str(cursor)) == cursor


@pytest.mark.parametrize("text", ["", "3", "x:1", "3:a", "-1:2", "3:-2", "3:2.x", "3:2.-5", "3:2.1.1"])
def test_anything_else_is_not_a_cursor(text: str) -> None:
    with pytest.raises(ValueError, match="not a stream cursor"):
        Cursor.parse(text)


def test_a_cursor_admits_each_topic_by_its_own_offset() -> None:
    cursor = Cursor(P, 10, 3)
    assert [cursor.admits(f) for f in (ev(10), ev(11), ch(3), ch(4))] == [False, True, False, True]
    assert cursor.past(ev(12)) == Cursor(P, 12, 3)
    assert cursor.past(ch(9)) == Cursor(P, 10, 9)
    assert str(Cursor(P, 4).past(ch(0))) == f"{P}:4.0", "the first chunk adds the progress part"


def chunk(queue: str, task: str, seq: int) -> ProgressChunk:
    return ProgressChunk(chunk_id=f"{task}-{seq}", task_id=task, attempt=1, agent_id="a1", queue=queue, seq=seq,
                         kind=ChunkKind.text, content=f"piece {seq}", occurred_at=5_000 + seq)


@pytest.fixture
def projector(tmp_path) -> Iterator[Projector]:
    store = Store(tmp_path / "store")
    yield Projector(store, [])
    store.close()


def drain(sub: sse.Subscription) -> list[Frame]:
    out = []
    while not sub.frames.empty():
        out.append(sub.frames.get_nowait())
    return out


async def test_the_hub_routes_committed_items_to_the_streams_of_their_task_and_queue(projector: Projector) -> None:
    hub = Hub()
    projector.listeners.append(hub.publish)
    one, whole, other_queue, other_task = (hub.subscribe("q", "t1"), hub.subscribe("q"), hub.subscribe("r"),
                                           hub.subscribe("q", "t9"))
    e, r = Events(queue="q"), Events(queue="r", seed="r")
    events = [e.join("a1"), e.submit("t1"), e.submit("t2"), r.submit("t1"), e.assign("t1", "a1"),
              e.start("t1", "a1", attempt=7), e.complete("t1", "a1")]
    projector.apply(EVENTS, [Recorded(x, P, n, 0) for n, x in enumerate(events)]
                    + [Poison(P, len(events), "bad bytes", "q", b"x", ())])
    projector.apply(PROGRESS, [Telemetry(PROGRESS, P, 0, chunk("q", "t1", 0)),
                               Telemetry(PROGRESS, P, 1, chunk("q", "t2", 0))])
    projector.apply("heartbeats", [Telemetry("heartbeats", 0, 0, Heartbeat(agent_id="a1", sent_at=1))])

    got = drain(one)
    assert [(f.topic, f.offset, f.name) for f in got] == [
        (EVENTS, 1, "TaskSubmitted"), (EVENTS, 4, "TaskAssigned"), (EVENTS, 5, "TaskStarted"),
        (EVENTS, 6, "TaskCompleted"), (PROGRESS, 0, "progress")]
    assert got[2].data["verdict"]["outcome"] == "rejected", "a rejected event is streamed, with its verdict"
    assert "stale attempt 7" in got[2].data["verdict"]["reason"]
    assert [f.ends("t1") for f in got[:4]] == [None] * 3 + [TaskState.completed]
    assert got[4].data["chunk"]["content"] == "piece 0"
    assert [(f.topic, f.offset) for f in drain(whole)] == [(EVENTS, n) for n in (0, 1, 2, 4, 5, 6)] + [
        (PROGRESS, 0), (PROGRESS, 1)]
    assert [f.offset for f in drain(other_queue)] == [3]
    assert drain(other_task) == []


async def test_a_subscriber_that_falls_behind_is_dropped_and_no_one_else_is_disturbed() -> None:
    hub = Hub(capacity=3)
    slow, quick = hub.subscribe("q", "t1"), hub.subscribe("q", "t1")
    for n in range(3):
        hub.deliver("q", ["t1"], ev(n))
        quick.frames.get_nowait()
    hub.deliver("q", ["t1"], ev(3))
    assert slow.dropped and not quick.dropped
    assert hub.dropped == 1 and hub.subscribers == 1
    hub.deliver("q", ["t1"], ev(4))
    assert [f.offset for f in drain(quick)] == [3, 4]
    hub.unsubscribe(slow)  # idempotent
    hub.unsubscribe(quick)
    assert hub.subscribers == 0


async def test_publish_never_raises_into_the_projection(monkeypatch: pytest.MonkeyPatch, projector: Projector) -> None:
    hub = Hub()
    projector.listeners.append(hub.publish)
    sub = hub.subscribe("q")
    monkeypatch.setattr(hub_module, "frame_of", lambda item: 1 / 0)
    projector.apply(EVENTS, [Recorded(Events(queue="q").submit("t1"), P, 0, 0)])  # does not raise
    assert sub.dropped, "a stream that missed a frame is dropped, so it catches up from the store"
    assert projector.next_offset(EVENTS, P) == 1


@dataclass
class FakeSource:
    """A stream source whose 'store' is a list the test commits frames to."""

    hub: Hub
    queue: str = "q"
    task_id: str | None = "t1"
    committed: list[Frame] = field(default_factory=list)
    during_history: list[Frame] = field(default_factory=list)  # committed (and published) mid-read
    state: TaskState | None = None
    reads: int = 0

    def commit(self, *frames: Frame) -> None:
        for frame in frames:
            self.committed.append(frame)
            if frame.ended:
                self.state = TaskState.completed
            self.hub.deliver(self.queue, [frame.data["task"]], frame)

    def owns(self, frame: Frame) -> bool:
        return frame.partition == P

    def history(self, cursor: Cursor) -> Iterator[Frame]:
        self.reads += 1
        snapshot = [f for f in self.committed if cursor.admits(f)]
        events = [f for f in snapshot if f.topic == EVENTS]
        chunks = [f for f in snapshot if f.topic == PROGRESS]
        for n, frame in enumerate(sse._merge(iter(events), iter(chunks))):
            if n == 1 and self.during_history:
                late, self.during_history = self.during_history, []
                self.commit(*late)
            yield frame

    def terminal(self) -> TaskState | None:
        return self.state

    async def drained(self, timeout: float) -> None:
        return None


async def take(messages: AsyncIterator[bytes], n: int, timeout: float = 5.0) -> list[bytes]:
    out = []
    async def collect() -> None:
        async for message in messages:
            out.append(message)
            if len(out) == n:
                return
    await asyncio.wait_for(collect(), timeout)
    return out


def parsed(message: bytes) -> dict[str, str]:
    fields = {}
    for line in message.decode().strip("\n").split("\n"):
        name, _, value = line.partition(": ")
        fields[name] = value
    return fields


async def test_history_then_buffer_delivers_every_frame_once_even_when_commits_race_the_read() -> None:
    hub = Hub()
    source = FakeSource(hub)
    source.commit(ev(0), ch(0), ev(1))  # before the stream
    source.during_history = [ev(2), ch(1), ev(3)]  # committed while history is being sent
    async with aclosing(stream(hub, source, Cursor(P))) as messages:  # type: ignore[arg-type]
        first = await take(messages, 6)
        source.commit(ch(2), ev(4, ended=True))  # live
        rest = await take(messages, 3)
    ids = [parsed(m)["id"] for m in first + rest[:2]]
    positions = [parsed(m)["data"] for m in first + rest[:2]]
    assert len(set(positions)) == len(positions) == 8
    assert ids[-1] == f"{P}:4.2" and ids[0] == f"{P}:0"
    assert parsed(rest[2])["event"] == "end" and "id" not in parsed(rest[2])
    assert hub.subscribers == 0


async def test_a_resumed_stream_starts_right_after_its_cursor() -> None:
    hub = Hub()
    source = FakeSource(hub)
    source.commit(ev(0), ch(0), ev(1), ch(1), ev(2), ch(2), ev(3, ended=True))
    async with aclosing(stream(hub, source, Cursor(P, 1, 0))) as messages:  # type: ignore[arg-type]
        got = await take(messages, 5)
    assert [parsed(m).get("id") for m in got] == [f"{P}:1.1", f"{P}:2.1", f"{P}:2.2", f"{P}:3.2", None]


async def test_a_dropped_subscriber_catches_up_from_the_store_and_still_gets_everything_once() -> None:
    hub = Hub(capacity=2)
    source = FakeSource(hub)
    source.commit(ev(0))
    async with aclosing(stream(hub, source, Cursor(P))) as messages:  # type: ignore[arg-type]
        got = await take(messages, 1)
        source.commit(*[ev(n) for n in range(1, 6)], ch(0, at=55), ev(6, ended=True))  # one burst: overflows
        got += await take(messages, 8)
    assert hub.dropped >= 1 and source.reads >= 2
    ids = [parsed(m).get("id") for m in got]
    assert ids == [f"{P}:{n}" for n in range(6)] + [f"{P}:5.0", f"{P}:6.0", None]


async def test_a_quiet_stream_sends_keep_alive_comments_and_a_closed_hub_ends_it() -> None:
    hub = Hub(heartbeat_s=0.05)
    source = FakeSource(hub, task_id=None)
    async with aclosing(stream(hub, source, Cursor(P, 9, 9), checkpoint=True)) as messages:  # type: ignore[arg-type]
        got = await take(messages, 3)
        assert got == [f"id: {P}:9.9\n\n".encode(), sse.KEEPALIVE, sse.KEEPALIVE]
        assert hub.subscribers == 1
        hub.close()
        rest = [m async for m in messages]
    assert all(m == sse.KEEPALIVE for m in rest)
    assert hub.subscribers == 0


async def test_a_client_that_goes_away_leaves_the_hub_and_the_other_streams_alone() -> None:
    hub = Hub()
    source = FakeSource(hub)
    source.commit(ev(0))
    gone = stream(hub, source, Cursor(P))  # type: ignore[arg-type]
    async with aclosing(stream(hub, source, Cursor(P))) as staying:  # type: ignore[arg-type]
        await take(gone, 1)
        await take(staying, 1)
        assert hub.subscribers == 2
        await gone.aclose()  # what a disconnect does to the response's generator
        assert hub.subscribers == 1
        source.commit(ch(0), ev(1, ended=True))
        got = await take(staying, 3)
    assert [parsed(m).get("id") for m in got] == [f"{P}:0.0", f"{P}:1.0", None]
