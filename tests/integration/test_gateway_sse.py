"""SSE streams on the real broker, through a real HTTP server: a client that is cut off and
reconnects with Last-Event-ID gets every later event and chunk exactly once; concurrent
clients see the same sequence; a client that goes away disturbs nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from projections.gateway import agents_http, sse
from projections.gateway.app import create_app
from projections.gateway.auth import Auth, parse_env
from projections.gateway.deps import Runtime
from projections.live import LiveProjection
from projections.views import all_views
from taskfold.core.reports import AttemptKey, Reporter
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.log.eventlog import EventLog, Recorded
from taskfold.log.reader import LogReader
from taskfold.log.records import Position, RawRecord
from taskfold.core.testing import Events
from taskfold.log.wire import decode_record, encode_record

pytestmark = pytest.mark.integration

TOKENS = ("sub-tok:submitter,audit-tok:auditor,agent-1-tok:agent:http-1,agent-2-tok:agent:http-2,"
          "shell-tok:agent:shell-1,root-tok:admin")
SUBMITTER = {"Authorization": "Bearer sub-tok"}


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once `condition()` holds; TimeoutError naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.02)


@dataclass
class Gateway:
    """The SSE and agent routers of a gateway (built by `create_app`) served by uvicorn on a free port."""

    url: str
    rt: Runtime
    log: EventLog
    topics: TopicNames

    @property
    def hub(self) -> sse.Hub:
        return self.rt.hub

    async def chunks(self, queue: str, task: str, seqs: Iterable[int], attempt: int = 1,
                     agent: str = "a1") -> list[Position]:
        """Append progress chunks the way an agent does (key = queue)."""
        reporter, key = Reporter(agent), AttemptKey(queue, task, attempt)
        records = [RawRecord(queue, *encode_record(reporter.chunk(key, seq, "text", f"chunk {seq}"))) for seq in seqs]
        return await self.log.writer.append(self.topics.progress, records)

    async def applied(self, positions: list[Position]) -> None:
        """Wait until the projection has applied the last of these `events` positions."""
        last = positions[-1]
        await self.rt.live.wait_applied(last.partition, last.offset, 10)


@asynccontextmanager
async def serve(broker: Broker, topics: TopicNames, path: Path, **hub: float) -> AsyncIterator[Gateway]:
    live = LiveProjection(broker.bootstrap, topics, path, all_views(), tansu=broker.is_tansu)
    log = EventLog(broker.bootstrap, topics, tansu=broker.is_tansu)
    await log.start()
    await live.start()
    rt = Runtime(live=live, log=log, auth=Auth(parse_env(TOKENS)), write_timeout_s=10)
    rt.hub = sse.Hub(**{"heartbeat_s": 0.5, **hub})
    app = create_app(runtime=rt, routers=(sse.router, agents_http.router))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), 10, "the server started")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Gateway(f"http://127.0.0.1:{port}", rt, log, topics)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await live.stop()
        await log.stop()


@pytest.fixture
async def gateway(broker: Broker, topics: TopicNames, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with serve(broker, topics, tmp_path / "store") as gw:
        yield gw


class Reader:
    """One SSE client: reads a stream into `messages` until `stop(messages)` holds or the stream ends."""

    def __init__(self, gw: Gateway, path: str, last_event_id: str | None = None,
                 stop: Callable[[list[dict]], bool] = lambda messages: False) -> None:
        headers = {**SUBMITTER, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
        self.messages: list[dict] = []
        self.status: int | None = None
        self._changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read(gw.url + path, headers, stop))

    async def _read(self, url: str, headers: dict, stop: Callable[[list[dict]], bool]) -> None:
        async with httpx.AsyncClient(timeout=30) as client, client.stream("GET", url, headers=headers) as response:
            self.status = response.status_code
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    fields[name or "comment"] = value.removeprefix(" ")
                    continue
                if fields and "comment" not in fields:
                    async with self._changed:
                        self.messages.append(fields)
                        self._changed.notify_all()
                fields = {}
                if stop(self.messages):
                    return  # leaving the block closes the connection mid-stream

    async def wait(self, condition: Callable[[list[dict]], bool], timeout: float = 15, what: str = "messages") -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: condition(self.messages) or self.task.done()),
                                   timeout)
        if not condition(self.messages):
            why = "" if self.task.cancelled() else self.task.exception()
            raise AssertionError(f"stream ended before {what}: {why}")

    async def finished(self, timeout: float = 20) -> list[dict]:
        await asyncio.wait_for(self.task, timeout)
        return self.messages


def delivered(messages: list[dict]) -> list[tuple[str, str]]:
    """(topic, position) of each event or chunk message, in order."""
    out = []
    for m in messages:
        if "data" in m and m.get("event") != "end":
            out.append(("progress" if m["event"] == "progress" else "events", json.loads(m["data"])["position"]))
    return out


def seen(position: Position) -> Callable[[list[dict]], bool]:
    return lambda messages: any(json.loads(m.get("data", "{}")).get("position") == str(position) for m in messages)


async def logged(gw: Gateway, queue: str, task: str | None) -> set[tuple[str, str]]:
    """(topic, position) of every event and chunk of a queue (or one task of it), read from the log itself;
    a chunk sent twice (same chunk_id) counts once, at its first copy."""
    out, chunk_ids = set(), set()
    async for entry in gw.log.read():
        if isinstance(entry, Recorded) and entry.event.queue == queue and task in (None, entry.event.task):
            out.add(("events", str(entry.position)))
    async with LogReader(gw.log.reader.bootstrap, tansu=gw.rt.live.tansu) as reader:
        async for record in reader.read(gw.topics.progress):
            chunk = decode_record(record.value)
            if chunk.queue == queue and task in (None, chunk.task_id) and chunk.chunk_id not in chunk_ids:
                chunk_ids.add(chunk.chunk_id)
                out.add(("progress", str(record.position)))
    return out


async def test_a_client_cut_off_mid_stream_resumes_with_last_event_id_and_misses_and_repeats_nothing(
        gateway: Gateway) -> None:
    e = Events(queue="sse", seed="resume")
    await gateway.chunks("sse", "T", range(0, 3))
    await gateway.applied(await gateway.log.append([e.join("a1", slots=2), e.submit("T"), e.assign("T", "a1"),
                                                    e.start("T", "a1")]))
    first = Reader(gateway, "/v1/tasks/T/events", stop=lambda messages: len(messages) == 4)
    await first.finished()  # cut off after 4 of the 6 stored messages

    await gateway.chunks("sse", "T", range(3, 7))  # while it is away: chunks, a rejected report, another task
    late = await gateway.log.append([e.start("T", "a1"), e.submit("U"), e.assign("U", "a1")])
    await gateway.applied(late)
    second = Reader(gateway, "/v1/tasks/T/events", last_event_id=first.messages[-1]["id"])
    await second.wait(seen(late[0]), what="the rejected start")
    await gateway.chunks("sse", "T", range(7, 9))  # live, then the end
    await gateway.log.append([e.complete("T", "a1")])
    messages = await second.finished()

    assert messages[-1]["event"] == "end" and json.loads(messages[-1]["data"])["state"] == "completed"
    assert "id" not in messages[-1], "the end keeps the last real id"
    got = delivered(first.messages) + delivered(messages)
    assert len(got) == len(set(got)), "nothing is delivered twice"
    assert set(got) == await logged(gateway, "sse", "T"), "every event and chunk of the task is delivered"
    assert len([t for t, _ in got if t == "progress"]) == 9
    rejected = next(json.loads(m["data"]) for m in messages if seen(late[0])([m]))
    assert rejected["verdict"]["outcome"] == "rejected" and "already started" in rejected["verdict"]["reason"]
    ids = [sse.Cursor.parse(m["id"]) for m in first.messages + messages[:-1]]
    assert [c.events for c in ids] == sorted(c.events for c in ids)
    assert [c.progress for c in ids] == sorted(c.progress for c in ids)

    again = Reader(gateway, "/v1/tasks/T/events", last_event_id=messages[-2]["id"])
    assert await again.finished() == [] and again.status == 204, "a finished task tells EventSource to stop"
    older = Reader(gateway, "/v1/tasks/T/events?follow=false", last_event_id=first.messages[-1]["id"])
    replayed = delivered(await older.finished())  # history is merged by time, live is in applied order
    assert sorted(replayed) == sorted(delivered(messages)) and older.messages[-1]["event"] != "end"


async def test_concurrent_clients_get_the_same_sequence_and_one_leaving_disturbs_nothing(
        broker: Broker, topics: TopicNames, tmp_path: Path) -> None:
    async with serve(broker, topics, tmp_path / "store", capacity=4) as gw:  # small buffers: bursts overflow
        e = Events(queue="many", seed="many")
        await gw.applied(await gw.log.append([e.join("a1"), e.submit("T")]))
        watchers = [Reader(gw, "/v1/tasks/T/events") for _ in range(3)]
        quitter = Reader(gw, "/v1/tasks/T/events", stop=lambda messages: len(messages) == 1)
        everything = Reader(gw, "/v1/queues/many/events?from=beginning")
        live = Reader(gw, "/v1/queues/many/events")
        await live.wait(lambda messages: len(messages) == 1, what="the checkpoint")
        await quitter.finished()
        await until(lambda: gw.hub.subscribers == 5, 10, "five streams subscribed, the quitter gone")

        await gw.applied(await gw.log.append([e.assign("T", "a1"), e.start("T", "a1")]))
        await gw.chunks("many", "T", range(40))  # one burst, more than a buffer holds
        await gw.chunks("many", "T", range(3))  # sent again (same chunk ids): streamed once, like history
        done = await gw.log.append([e.complete("T", "a1")])
        sequences = [await w.finished() for w in watchers]
        await everything.wait(seen(done[0]), what="the completion")
        await live.wait(seen(done[0]), what="the completion")
        expected = await logged(gw, "many", None)
        everything.task.cancel()
        live.task.cancel()
        await until(lambda: gw.hub.subscribers == 0, 10, "every stream left the hub")
        dropped = gw.hub.dropped

    assert dropped >= 1, "the burst overflowed buffers, so streams caught up from the store"
    assert sequences[0] == sequences[1] == sequences[2]
    assert sequences[0][-1]["event"] == "end"
    got = delivered(sequences[0])
    assert len(got) == len(set(got)) == 4 + 40
    assert set(got) == expected - {("events", p) for _, p in delivered(everything.messages[:1])}, "all but the join"
    assert delivered(quitter.messages) == got[:1]
    queue_all = delivered(everything.messages)
    assert len(queue_all) == len(set(queue_all)) and set(queue_all) == expected
    checkpoint = live.messages[0]
    assert set(checkpoint) == {"id"}, "a live queue stream opens with an id-only checkpoint"
    assert set(delivered(live.messages)) == expected - set(queue_all[:2]) and len(delivered(live.messages)) == 43


async def test_streams_answer_clear_errors(gateway: Gateway) -> None:
    e = Events(queue="errs", seed="errs")
    await gateway.applied(await gateway.log.append([e.submit("T")]))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        unknown = await client.get("/v1/tasks/nope/events", headers=SUBMITTER)
        no_queue = await client.get("/v1/queues/nope/events", headers=SUBMITTER)
        garbage = await client.get("/v1/tasks/T/events", headers={**SUBMITTER, "Last-Event-ID": "soon"})
        elsewhere = (sse.partitions(gateway.rt, "errs")[0] + 1) % 4
        wrong = await client.get("/v1/tasks/T/events", headers={**SUBMITTER, "Last-Event-ID": f"{elsewhere}:0"})
        anonymous = await client.get("/v1/tasks/T/events")
        agent = await client.get("/v1/tasks/T/events", headers={"Authorization": "Bearer agent-1-tok"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert no_queue.status_code == 404
    assert garbage.status_code == 400 and garbage.json()["error"]["problems"][0]["field"] == "Last-Event-ID"
    assert wrong.status_code == 400 and "partition" in wrong.json()["error"]["message"]
    assert anonymous.status_code == 401 and agent.status_code == 403
