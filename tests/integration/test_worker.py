"""`taskfold worker` on a real broker: assignments, a SIGKILL restart, two workers.

The worker runs as a child process (`python -m taskfold worker`, started by
`streams.run.spawn`, as `taskfold dev` will). The test plays the agents: it appends
AgentJoined and TaskSubmitted, heartbeats, folds the log with the same `Ledger` everyone
uses, and answers every accepted TaskAssigned to its agents with TaskStarted and
TaskCompleted. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from streams.run import spawn
from taskfold.broker.topics import queue_partition
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.events import Event, TaskAssigned
from taskfold.core.fold import Ledger
from taskfold.log import LogReader, LogWriter, RawRecord
from taskfold.log.eventlog import EventLog, Recorded
from taskfold.core.state import TaskState
from taskfold.core.telemetry import Heartbeat
from taskfold.core.testing import Events
from taskfold.log.wire import encode_record

pytestmark = pytest.mark.integration

READY = re.compile(r"taskfold worker (\S+): ready: partitions \[([\d, ]*)\]")


async def eventually(
    check: Callable[[], object], timeout: float, what: str, detail: Callable[[], str] = lambda: "",
) -> float:
    """Wait until check() is truthy; return the seconds it took; fail after `timeout` with detail()."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not within {timeout} s. {detail()}")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


class Worker:
    """A `taskfold worker` child process and the lines it prints."""

    def __init__(self, broker: Broker, topics: TopicNames, state_dir: Path) -> None:
        self.lines: list[str] = []
        self.started = time.monotonic()
        state_dir.mkdir(parents=True, exist_ok=True)
        self.stderr = (state_dir / f"worker-{uuid.uuid4().hex[:6]}.log").open("wb")
        self.proc = spawn(broker.bootstrap, prefix=topics.prefix, tansu=broker.is_tansu, state_dir=state_dir,
                          args=["--fast-rebalance", "--tick-ms", "100"], stdout=subprocess.PIPE,
                          stderr=self.stderr, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.stderr.write(f"STDOUT {line}".encode())  # one file to read after a failure

    def partitions(self) -> set[int] | None:
        """The partitions of the latest `ready` line, or None before the first."""
        readies = [m for line in self.lines if (m := READY.search(line))]
        if not readies:
            return None
        return {int(p) for p in readies[-1].group(2).split(",") if p.strip()}

    def ready_after(self, count: int = 1) -> bool:
        return sum(1 for line in self.lines if READY.search(line)) >= count

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(10)

    def stop(self) -> int:
        """SIGTERM and wait: the clean way out."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.reader.join(10)
        self.stderr.close()
        return self.proc.returncode


class Agents:
    """The agents' side, as the SDK would do it: fold the log, heartbeat, run what is assigned."""

    def __init__(self, broker: Broker, topics: TopicNames, names: set[str]) -> None:
        self.broker, self.topics, self.names = broker, topics, names
        self.ledger = Ledger()
        self.accepted_assignments: Counter[str] = Counter()
        self.rejected: list[tuple[Event, str]] = []
        self.duplicates = 0
        self.trace: list[str] = []
        self.assigned_at: dict[str, float] = {}
        self.log = EventLog(broker.bootstrap, topics, tansu=broker.is_tansu)
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        await self.log.start()
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._heartbeat())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.log.stop()

    async def append(self, events: list[Event]) -> None:
        await self.log.append(events)

    def describe(self, queue: str, worker: Worker) -> str:
        """What is not done, and what the worker said (for a failure message)."""
        state = self.ledger.state(queue)
        open_ = {t.task_id: f"{t.state.value}/{t.attempt}/{t.agent_id}" for t in state.tasks.values()
                 if t.state != TaskState.completed}
        seats = {m.agent_id: sorted(m.holding) for m in state.members.values()}
        return f"log (last 40): {self.trace[-40:]}; open tasks {open_}; seats {seats}; rejected {self.rejected[:3]}; worker said {worker.lines[-5:]}"

    def state(self, queue: str, task: str) -> TaskState | None:
        found = self.ledger.state(queue).task(task)
        return found.state if found else None

    async def _follow(self) -> None:
        async with contextlib.aclosing(self.log.read(live=True)) as entries:
            async for entry in entries:
                if not isinstance(entry, Recorded):
                    continue
                event = entry.event
                verdict = self.ledger.apply(event)
                self.trace.append(f"{entry.position} {event.event_type} {event.task} {event.agent} {verdict}")
                if verdict.outcome == "rejected":
                    self.rejected.append((event, str(verdict)))
                self.duplicates += verdict.outcome == "duplicate"
                if isinstance(event, TaskAssigned) and verdict.accepted:
                    self.accepted_assignments[f"{event.queue}/{event.task_id}"] += 1
                    self.assigned_at[f"{event.queue}/{event.task_id}"] = time.monotonic()
                    if event.agent_id in self.names:
                        asyncio.create_task(self._run(event))

    async def _run(self, assigned: TaskAssigned) -> None:
        e = Events(queue=assigned.queue, seed=uuid.uuid4().hex, now=int(time.time() * 1000))
        a = (assigned.task_id, assigned.agent_id, assigned.attempt)
        await self.log.append([e.start(*a), e.complete(*a)])

    async def _heartbeat(self) -> None:
        async with LogWriter(self.broker.bootstrap, tansu=self.broker.is_tansu) as writer:
            while True:
                now = int(time.time() * 1000)
                records = []
                for name in sorted(self.names):
                    value, headers = encode_record(Heartbeat(agent_id=name, queues=[], sent_at=now))
                    records.append(RawRecord(key=name, value=value, headers=headers))
                await writer.append(self.topics.heartbeats, records)
                await asyncio.sleep(1.0)  # the heartbeat period, not a synchronisation


@contextlib.asynccontextmanager
async def agents(broker: Broker, topics: TopicNames, *names: str) -> AsyncIterator[Agents]:
    crew = Agents(broker, topics, set(names))
    await crew.start()
    try:
        yield crew
    finally:
        await crew.stop()


@contextlib.contextmanager
def workers(broker: Broker, topics: TopicNames, state_dir: Path):
    started: list[Worker] = []

    def start(elsewhere: Path | None = None) -> Worker:
        worker = Worker(broker, topics, elsewhere or state_dir)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


def submits(queue: str, count: int, **fields) -> tuple[Events, list[Event]]:
    e = Events(queue=queue, seed=uuid.uuid4().hex, now=int(time.time() * 1000))
    return e, [e.submit(f"{queue}-t{n}", **fields) for n in range(count)]


async def test_submitted_tasks_are_assigned_one_after_another(broker: Broker, topics: TopicNames, tmp_path: Path) -> None:
    with workers(broker, topics, tmp_path) as start:
        worker = start()
        startup = await eventually(worker.ready_after, 60, "worker ready")
        async with agents(broker, topics, "a1") as crew:
            e, tasks = submits("emails", 3)
            async with LogWriter(broker.bootstrap, tansu=broker.is_tansu) as writer:
                await writer.append(topics.events, [RawRecord("emails", b"\xc3\x01 not avro")])  # poison first
            await crew.append([e.join("a1", slots=1)])
            latencies = []
            for task in tasks:  # one slot: each is assigned only once the previous completes
                t0 = time.monotonic()
                await crew.append([task])
                key = f"emails/{task.task_id}"
                await eventually(lambda: key in crew.assigned_at, 15, f"{task.task_id} assigned")
                latencies.append(crew.assigned_at[key] - t0)
                await eventually(lambda: crew.state("emails", task.task_id) == TaskState.completed, 15, "completed")
        print(f"worker startup {startup:.2f} s; submit->assigned seen by a live reader: "
              f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
        assert all(n == 1 for n in crew.accepted_assignments.values()) and len(crew.accepted_assignments) == 3
        assert crew.rejected == []
        async with LogReader(broker.bootstrap, tansu=broker.is_tansu) as reader:
            ends: dict[int, int] = {}

            async def poisoned() -> bool:
                ends.update(await reader.end_offsets(topics.poison))
                return sum(ends.values()) > 0

            for _ in range(100):  # a deadline of about 10 s on an await-able condition
                if await poisoned():
                    break
                await asyncio.sleep(0.1)
            (quarantined,) = [r async for r in reader.read(topics.poison)]
        assert quarantined.value == b"\xc3\x01 not avro" and quarantined.key == "emails"
        assert b"fingerprint" in quarantined.header("poison-reason")
        assert worker.stop() == 0 and any("stopped" in line for line in worker.lines)


async def test_a_worker_killed_mid_run_is_replaced_without_double_or_stuck_tasks(
    broker: Broker, topics: TopicNames, tmp_path: Path,
) -> None:
    """Kill, restart on the same state directory, kill, restart on a new one (changelog).

    After a kill the same directory's store is discarded too: it may hold rows the changelog
    never got, and the second restart, from the changelog alone, would see them missing.
    """
    with workers(broker, topics, tmp_path) as start:
        worker = start()
        await eventually(worker.ready_after, 60, "first worker ready")
        async with agents(broker, topics, "a1", "a2") as crew:
            e, batch = submits("builds", 30)
            await crew.append([e.join("a1", slots=2), e.join("a2", slots=2)] + batch[:10])
            readies = []
            for phase, state_dir in ((1, tmp_path), (2, tmp_path / "fresh")):
                await eventually(lambda: len(crew.accepted_assignments) >= 10 * phase - 5, 20, "tasks assigned")
                worker.kill()
                killed = time.monotonic()
                await crew.append(batch[10 * phase:10 * phase + 10])  # arrives while no worker runs
                worker = start(state_dir)
                await eventually(worker.ready_after, 60, "restarted worker ready")
                readies.append(time.monotonic() - killed)
                if phase == 1:
                    assert any("did not stop cleanly" in line for line in worker.lines), worker.lines
            done = lambda: all(crew.state("builds", t.task_id) == TaskState.completed for t in batch)  # noqa: E731
            await eventually(done, 30, "all 30 tasks completed", lambda: crew.describe("builds", worker))
            worker.stop()
        print(f"SIGKILL -> restarted worker ready: {readies[0]:.2f} s (same directory), {readies[1]:.2f} s (new directory); "
              f"duplicate decisions folded away: {crew.duplicates}")
        assert sorted(crew.accepted_assignments.values()) == [1] * 30, "a task was assigned twice"
        assert crew.rejected == [], f"the fold rejected: {crew.rejected[:3]}"


async def test_a_worker_stopped_cleanly_keeps_its_local_store(broker: Broker, topics: TopicNames, tmp_path: Path) -> None:
    """SIGTERM leaves the clean-stop mark; the next start on that directory trusts its store."""
    with workers(broker, topics, tmp_path) as start:
        worker = start()
        await eventually(worker.ready_after, 60, "worker ready")
        async with agents(broker, topics, "a1") as crew:
            e, batch = submits("emails", 2)
            await crew.append([e.join("a1", slots=1)] + batch)
            await eventually(lambda: all(crew.state("emails", t.task_id) == TaskState.completed for t in batch), 30,
                             "both tasks completed")
        assert worker.stop() == 0
        assert list(tmp_path.rglob("clean-stop")), "a clean stop leaves its mark"
        again = start()
        await eventually(again.ready_after, 60, "restarted worker ready")
        assert not any("did not stop cleanly" in line for line in again.lines), again.lines
        assert not list(tmp_path.rglob("clean-stop")), "the mark is spent by the run that read it"


def queues_covering(partitions: int) -> list[str]:
    """One queue name per partition."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        found.setdefault(queue_partition(f"q{n}", partitions), f"q{n}")
        n += 1
    return [found[p] for p in range(partitions)]


async def test_two_workers_split_the_partitions(broker: Broker, topics: TopicNames, tmp_path: Path) -> None:
    partitions = int(os.environ.get("TASKFOLD_TEST_PARTITIONS", "4"))
    with workers(broker, topics, tmp_path) as start:
        one, two = start(), start()

        def split() -> bool:
            a, b = one.partitions(), two.partitions()
            return bool(a and b) and not (a & b) and (a | b) == set(range(partitions))

        took = await eventually(split, 60, "two workers holding disjoint halves")
        print(f"two workers split {one.partitions()} / {two.partitions()} in {took:.2f} s")
        async with agents(broker, topics, "a1") as crew:
            batch: list[Event] = []
            for queue in queues_covering(partitions):
                e, tasks = submits(queue, 2)
                batch += [e.join("a1", slots=4)] + tasks
            await crew.append(batch)
            tasks = [t for t in batch if t.event_type == "TaskSubmitted"]
            done = lambda: all(crew.state(t.queue, t.task_id) == TaskState.completed for t in tasks)  # noqa: E731
            await eventually(done, 30, "tasks of every partition completed")
        assert sorted(crew.accepted_assignments.values()) == [1] * len(tasks)
