"""Rebuilding projections from the log: a rebuilt store is byte for byte the live one, a
store as of a moment holds the fold of the log up to it, and `taskfold replay --rebuild`
and `--as-of` build them from the command line."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from rocksdict import AccessType, Options, Rdict

from projections.live import LiveProjection
from projections.projector import EVENTS, HEARTBEATS, PROGRESS
from projections.queries import task_at
from projections.rebuild import BUILT_TO, CutError, TargetError, rebuild
from projections.store import META, Store, row_key
from projections.view import Change, Telemetry
from projections.views import all_views
from projections.views.viewrows import fold_part, task_json, task_key
from taskfold.core import foldrows
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.events import Event
from taskfold.core.fold import fold
from taskfold.log.eventlog import Cut, EventLog, Recorded
from taskfold.log.reader import LogReader
from taskfold.log.records import RawRecord
from taskfold.log.writer import LogWriter
from taskfold.core.telemetry import ChunkKind, Heartbeat, ProgressChunk
from taskfold.core.testing import Events
from taskfold.log.wire import encode_record

QUEUES = ("alpha", "beta")
START_MS = 1_700_000_000_000  # in the past: the fold rejects stamps beyond the skew bound ahead of the broker
POISON = b"\xc3\x01not-an-avro-fingerprint"
# Rows that legitimately differ between a live run and a rebuild of the same log.
RUN_SPECIFIC = {
    row_key(META, BUILT_TO),  # written by a rebuild only: what it was built up to
}
RUN_SPECIFIC_COUNTS = {"dropped_by_position"}  # in meta "counts": redeliveries seen by this run


class TaskRows:
    """A small view over every kind of input: task rows, each agent's last beat, progress chunks."""

    name = "test-tasks"

    def apply(self, change: Change, rows) -> None:  # noqa: ANN001
        for task in change.tasks:
            rows.put("t-tasks", task.task_id, {"state": task.state.value, "attempt": task.attempt,
                                               "agent": task.agent_id, "result": task.result,
                                               "at": change.position})
        if change.verdict.outcome == "rejected":
            rows.put("t-rejected", change.key, {"type": change.event.event_type, "why": change.verdict.reason})

    def telemetry(self, item: Telemetry, rows) -> None:  # noqa: ANN001
        record = item.record
        if isinstance(record, Heartbeat):
            rows.put("t-beats", record.agent_id, {"sent_at": record.sent_at, "at": item.key})
        else:
            rows.put("t-chunks", f"{record.task_id}/{record.attempt}/{record.seq:06d}",
                     {"content": record.content, "occurred_at": record.occurred_at})


def views() -> list:
    """The views under test: the gateway's, and the small one above."""
    return [*all_views(), TaskRows()]


@dataclass(frozen=True)
class Item:
    """One record of the workload: which topic, what, and the time it carries."""

    role: str
    record: RawRecord
    stamp: int | None


class Workload:
    """A deterministic mix of events, progress chunks and heartbeats on one clock (10 ms a record)."""

    def __init__(self, tasks: int, seed: int = 4) -> None:
        self.rng = random.Random(seed)
        self.now = START_MS
        self.items: list[Item] = []
        self.events: list[Event] = []
        self.makers = {q: Events(queue=q, seed=q) for q in QUEUES}
        self.agents = {q: [f"{q}-agent-{n}" for n in range(3)] for q in QUEUES}
        for q in QUEUES:
            for agent in self.agents[q]:
                self.event(self.makers[q].join(agent, slots=4, at=self.tick()))
        self.retries: list[tuple[str, str, str]] = []
        for i in range(tasks):
            self.task(i)
            if i % 40 == 39:
                self.beats()
                self.retry()
            if i == tasks // 2:
                self.items.append(Item(EVENTS, RawRecord(key="alpha", value=POISON, headers=[]), None))
                for event in self.rng.sample(self.events, 5):  # redelivered: duplicates by event id
                    self.event(event)
        self.retry()

    def tick(self, by: int = 10) -> int:
        self.now += by
        return self.now

    def event(self, event: Event) -> None:
        value, headers = encode_record(event)
        self.events.append(event)
        self.items.append(Item(EVENTS, RawRecord(key=event.queue, value=value, headers=headers), event.occurred_at))

    def telemetry(self, role: str, key: str, record: Heartbeat | ProgressChunk) -> None:
        value, headers = encode_record(record)
        stamp = record.sent_at if isinstance(record, Heartbeat) else record.occurred_at
        self.items.append(Item(role, RawRecord(key=key, value=value, headers=headers), stamp))

    def task(self, i: int) -> None:
        q = QUEUES[i % 2]
        e, agent, task = self.makers[q], self.agents[q][i % 3], f"{q}-task-{i}"
        self.event(e.submit(task, at=self.tick(), priority=self.rng.choice(["critical", "high", "medium", "low"]),
                            idempotency_key=f"key-{i}", session_id=f"session-{i % 7}"))
        roll = self.rng.random()
        if roll < 0.10:
            return  # stays queued
        if roll < 0.14:
            self.event(e.cancel(task, at=self.tick()))
            return
        if roll < 0.16:
            self.event(e.submit(f"{task}-again", at=self.tick(), idempotency_key=f"key-{i}"))  # duplicate key
        self.event(e.assign(task, agent, at=self.tick()))
        self.event(e.start(task, agent, at=self.tick()))
        for seq in range(3 if roll < 0.5 else 0):
            self.telemetry(PROGRESS, q, ProgressChunk(
                chunk_id=f"{task}/1/{seq}", task_id=task, attempt=1, agent_id=agent, queue=q, seq=seq,
                kind=ChunkKind.text, content=f"step {seq} of {task}", occurred_at=self.tick()))
        self.outcome(e, task, agent, roll)

    def outcome(self, e: Events, task: str, agent: str, roll: float) -> None:
        if roll < 0.60:
            self.event(e.complete(task, agent, result=json.dumps({"task": task}), at=self.tick()))
        elif roll < 0.72:
            self.event(e.fail(task, agent, retryable=True, at=self.tick()))
            self.retries.append((e.queue, task, agent))
        elif roll < 0.77:
            self.event(e.fail(task, agent, retryable=False, error="bad input", at=self.tick()))
        elif roll < 0.87:
            self.event(e.cancel(task, at=self.tick()))
            self.event(e.cancelled(task, agent, at=self.tick()))
        else:
            other = next(a for a in self.agents[e.queue] if a != agent)
            self.event(e.complete(task, other, at=self.tick()))  # rejected: not the holder
            self.event(e.complete(task, agent, attempt=2, at=self.tick()))  # rejected: stale attempt
            self.event(e.complete(task, agent, at=self.tick()))

    def beats(self) -> None:
        for q in QUEUES:
            for agent in self.agents[q]:
                self.telemetry(HEARTBEATS, agent, Heartbeat(agent_id=agent, queues=[q], sent_at=self.tick(),
                                                            load={q: 0}, slots={q: 4}))

    def retry(self) -> None:
        self.tick(1_100)  # past the first retry delay (at most 1 s)
        for q, task, agent in self.retries:
            e = self.makers[q]
            self.event(e.assign(task, agent, attempt=2, at=self.tick()))
            self.event(e.start(task, agent, attempt=2, at=self.tick()))
            self.event(e.complete(task, agent, attempt=2, result='"second time"', at=self.tick()))
        self.retries = []


async def append(broker: Broker, topics: TopicNames, items: list[Item], chunk: int = 250) -> None:
    """Append in chunks, each chunk's records topic by topic, keeping the order within a topic."""
    names = {EVENTS: topics.events, PROGRESS: topics.progress, HEARTBEATS: topics.heartbeats}
    async with LogWriter(broker.bootstrap, tansu=broker.is_tansu) as writer:
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            for role, topic in names.items():
                records = [item.record for item in part if item.role == role]
                if records:
                    await writer.append(topic, records)


async def ends(broker: Broker, topics: TopicNames) -> dict[str, dict[int, int]]:
    names = {EVENTS: topics.events, PROGRESS: topics.progress, HEARTBEATS: topics.heartbeats}
    async with LogReader(broker.bootstrap, tansu=broker.is_tansu) as reader:
        return {role: await reader.end_offsets(topic) for role, topic in names.items()}


def dump(path: Path) -> dict[bytes, bytes]:
    """Every key and value of a store, as bytes."""
    db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        return dict(db.items())
    finally:
        db.close()


def comparable(rows: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The rows without those that are legitimately run-specific."""
    out = {k: v for k, v in rows.items() if k not in RUN_SPECIFIC}
    counts = row_key(META, "counts")
    if counts in out:
        kept = {k: v for k, v in json.loads(out[counts]).items() if k not in RUN_SPECIFIC_COUNTS}
        out[counts] = json.dumps(kept, sort_keys=True).encode()
    return out


def tables(rows: dict[bytes, bytes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in rows:
        table = key.split(b"\x00", 1)[0].decode()
        out[table] = out.get(table, 0) + 1
    return out


def fold_tasks(store: Store) -> dict[str, tuple]:
    """(state, attempt, agent, result) of every task in the store's own fold rows."""
    stored = foldrows.read(store.raw_scan("_fold"))
    return {t.task_id: (t.state.value, t.attempt, t.agent_id, t.result)
            for q in stored.queues.values() for t in q.state().tasks.values()}


async def test_a_rebuilt_store_equals_the_live_one_byte_for_byte(broker, topics, tmp_path: Path) -> None:
    work = Workload(tasks=900)
    live = LiveProjection(broker.bootstrap, topics, tmp_path / "live", views(), tansu=broker.is_tansu)
    await live.start()
    try:
        await append(broker, topics, work.items)
        want = await ends(broker, topics)
        await live.wait_for(lambda: all(live.projector.next_offset(role, p) >= end
                                        for role, by_partition in want.items() for p, end in by_partition.items()),
                            timeout=60)
        live_counts = dict(live.projector.counts)
    finally:
        await live.stop()

    seen: list[tuple[int, int]] = []
    report = await rebuild(broker.bootstrap, topics, tmp_path / "rebuilt", views(), tansu=broker.is_tansu,
                           progress=lambda done, total: seen.append((done, total)))

    live_rows, rebuilt_rows = dump(tmp_path / "live"), dump(tmp_path / "rebuilt")
    assert comparable(rebuilt_rows) == comparable(live_rows)
    in_tables = tables(live_rows)
    assert in_tables["t-tasks"] == 900 and in_tables["t-beats"] == 6 and in_tables["t-chunks"] > 100
    assert in_tables["t-rejected"] > 10 and in_tables["poison"] == 1
    events = sum(i.role == EVENTS for i in work.items)
    assert report.applied == {EVENTS: events, PROGRESS: sum(i.role == PROGRESS for i in work.items),
                              HEARTBEATS: sum(i.role == HEARTBEATS for i in work.items)}
    assert report.poison == 1 and report.verdicts["duplicate"] >= 5 and report.events_per_second > 0
    assert report.verdicts == {v: live_counts[v] for v in ("accepted", "duplicate", "rejected")}
    assert json.loads(rebuilt_rows[row_key(META, BUILT_TO)]) == {
        "until_ms": None, "offsets": {str(p): o for p, o in sorted(want[EVENTS].items()) if o},
        "telemetry_until_ms": None, "as_of": False}
    assert seen[0] == (0, report.records) and seen[-1] == (report.records, report.records)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no build or old dirs left


async def test_a_store_as_of_the_middle_of_a_run_holds_the_fold_up_to_then(broker, topics, tmp_path: Path) -> None:
    work = Workload(tasks=600, seed=9)
    live = LiveProjection(broker.bootstrap, topics, tmp_path / "live", views(), tansu=broker.is_tansu)
    await live.start()
    try:
        await append(broker, topics, work.items)
        want = await ends(broker, topics)
        await live.wait_for(lambda: all(live.projector.next_offset(EVENTS, p) >= end
                                        for p, end in want[EVENTS].items()), timeout=60)
        middle = work.items[len(work.items) // 2].stamp or work.items[len(work.items) // 2 + 1].stamp
        cut = Cut(until_ms=middle)
        report = await rebuild(broker.bootstrap, topics, tmp_path / "as-of", views(), tansu=broker.is_tansu,
                               cut=cut)
        async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
            entries = [entry async for entry in log.read(cut=cut)]
        kept = [e for e in entries if isinstance(e, Recorded)]
        ledger, _ = fold(e.event for e in kept)
        expected = {t.task_id: t for q in ledger.queues.values() for t in q.tasks.values()}
        final, _ = fold(work.events)
        everyone = {t.task_id: t for q in final.queues.values() for t in q.tasks.values()}
        assert 0 < len(expected) < len(everyone)
        assert any(expected[t].state != everyone[t].state for t in expected)  # the past differs from now
        # The live store answers "as of" from its history rows: the same answer.
        for task_id, task in everyone.items():
            then = task_at(live.store, task_id, middle, queue=task.queue)
            assert (fold_part(then) if then else None) == (task_json(expected[task_id]) if task_id in expected
                                                            else None), task_id
    finally:
        await live.stop()

    store = Store(tmp_path / "as-of", read_only=True)
    try:
        assert fold_tasks(store) == {i: (t.state.value, t.attempt, t.agent_id, t.result) for i, t in expected.items()}
        rows = {i: store.get("tasks", task_key(i, t.queue)) for i, t in everyone.items()}
        assert {i: fold_part(r) for i, r in rows.items() if r} == {i: task_json(t) for i, t in expected.items()}
        beats = [r["sent_at"] for _, r in store.scan("t-beats")]
        chunks = [r["occurred_at"] for _, r in store.scan("t-chunks")]
        assert beats and chunks and max(beats + chunks) <= middle
        built_to = store.meta(BUILT_TO)
    finally:
        store.close()
    last = {}
    for e in kept:
        last[e.partition] = e.offset + 1
    assert built_to == {"until_ms": middle, "offsets": {str(p): o for p, o in sorted(last.items())},
                        "telemetry_until_ms": middle, "as_of": True}
    assert report.applied[EVENTS] == len(entries)


async def test_an_offsets_cut_cuts_telemetry_at_its_newest_event(broker, topics, tmp_path: Path) -> None:
    work = Workload(tasks=80, seed=2)
    await append(broker, topics, work.items)
    want = await ends(broker, topics)
    offsets = {p: end // 2 for p, end in want[EVENTS].items() if end}
    report = await rebuild(broker.bootstrap, topics, tmp_path / "cut", views(), tansu=broker.is_tansu,
                           cut=Cut(offsets=offsets))
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        kept = [e async for e in log.read(cut=Cut(offsets=offsets)) if isinstance(e, Recorded)]
    newest = max(e.event.occurred_at for e in kept)
    assert report.built_to["offsets"] == {str(p): o for p, o in sorted(offsets.items())}
    assert report.built_to["telemetry_until_ms"] == newest
    stamps = [i.stamp for i in work.items if i.role != EVENTS]
    assert report.applied[PROGRESS] + report.applied[HEARTBEATS] == sum(s <= newest for s in stamps) > 0

    with pytest.raises(CutError, match="partition.* 9 not in"):
        await rebuild(broker.bootstrap, topics, tmp_path / "bad", views(), tansu=broker.is_tansu,
                      cut=Cut(offsets={9: 1}))


class Exploding(TaskRows):
    """Fails on the n-th event, like a view with a bug."""

    def __init__(self, after: int) -> None:
        self.left = after

    def apply(self, change: Change, rows) -> None:  # noqa: ANN001
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("a view with a bug")
        super().apply(change, rows)


async def test_a_failed_or_refused_rebuild_leaves_the_old_store_as_it_was(broker, topics, tmp_path: Path) -> None:
    await append(broker, topics, Workload(tasks=30).items)
    target = tmp_path / "store"
    await rebuild(broker.bootstrap, topics, target, [TaskRows()], tansu=broker.is_tansu)
    before = dump(target)
    with pytest.raises(RuntimeError, match="a view with a bug"):
        await rebuild(broker.bootstrap, topics, target, [Exploding(after=20)], tansu=broker.is_tansu)
    assert dump(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]

    held = Store(target)  # as a running gateway holds it
    try:
        with pytest.raises(TargetError, match="in use"):
            await rebuild(broker.bootstrap, topics, target, [TaskRows()], tansu=broker.is_tansu)
    finally:
        held.close()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(TargetError, match="not a projection store"):
        await rebuild(broker.bootstrap, topics, tmp_path / "notes", [TaskRows()], tansu=broker.is_tansu)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taskfold", "replay", *args], env=env, capture_output=True,
                          text=True, timeout=60)


async def test_cli_rebuilds_and_builds_as_of_stores(broker, topics, tmp_path: Path) -> None:
    work = Workload(tasks=40)
    await append(broker, topics, work.items)
    state = tmp_path / "state"
    env = dict(os.environ, TASKFOLD_BOOTSTRAP=broker.bootstrap, TASKFOLD_TOPIC_PREFIX=topics.prefix,
               TASKFOLD_BROKER="tansu" if broker.is_tansu else "kafka", TASKFOLD_STATE_DIR=str(state),
               TASKFOLD_GATEWAY_NAME="main", COLUMNS="200")
    bad, clash, aimless = await asyncio.gather(
        asyncio.to_thread(run_cli, env, "--as-of", "yesterday"),
        asyncio.to_thread(run_cli, env, "--rebuild", "--as-of", "5"),
        asyncio.to_thread(run_cli, env, "--store", str(tmp_path / "x")))
    assert bad.returncode == 2 and "--as-of" in bad.stderr and "not a time" in bad.stderr
    assert clash.returncode == 2 and "--rebuild" in clash.stderr
    assert aimless.returncode == 2 and "--store" in aimless.stderr and not (tmp_path / "x").exists()

    middle = work.items[len(work.items) // 2].stamp or work.items[len(work.items) // 2 + 1].stamp
    at_offsets = tmp_path / "at-offsets"
    cut = {p: end // 2 for p, end in (await ends(broker, topics))[EVENTS].items() if end}
    spec = ",".join(f"{p}:{o}" for p, o in cut.items())
    rebuilt, as_of, by_offsets = await asyncio.gather(
        asyncio.to_thread(run_cli, env, "--rebuild"),
        asyncio.to_thread(run_cli, env, "--as-of", str(middle)),
        asyncio.to_thread(run_cli, env, "--offsets", spec, "--store", str(at_offsets), "--json"))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert as_of.returncode == 0, as_of.stderr
    assert by_offsets.returncode == 0, by_offsets.stderr
    built = json.loads(by_offsets.stdout)
    assert built["store"] == str(at_offsets) and built["built_to"]["offsets"] == {str(p): o for p, o in cut.items()}
    store_path = state / "gateway" / "main"  # where `taskfold gateway` looks by default
    events = sum(i.role == EVENTS for i in work.items)
    assert f"{events:,} events" in rebuilt.stdout and "events/s" in rebuilt.stdout
    assert str(store_path) in rebuilt.stdout
    as_of_path = state / "projections" / f"as-of-{middle}"
    assert f"taskfold gateway --store {as_of_path} --read-only" in as_of.stdout
    for path, until in ((store_path, None), (as_of_path, middle)):
        store = Store(path, read_only=True)
        try:
            assert store.meta(BUILT_TO)["until_ms"] == until
            assert store.offsets(EVENTS)
        finally:
            store.close()
    assert [p.name for p in (state / "projections").iterdir()] == [as_of_path.name]  # no temp dirs left
    assert [p.name for p in (state / "gateway").iterdir()] == ["main"]

    again = run_cli(env, "--rebuild", "--json")
    assert again.returncode == 0, again.stderr
    line = json.loads(again.stdout)
    assert line["store"] == str(store_path) and line["applied"]["events"] == events and line["poison"] == 1
