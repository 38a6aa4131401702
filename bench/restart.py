"""A scheduler worker restarted on a queue with long history (issue 12 target 6).

    .venv/bin/python bench/restart.py [--tasks 100000] [--partitions 6] [--worker-args "--tick-ms 50"]
        [--restarts clean,killed,fresh] [--keep] [--fold-history]

Starts its own broker (as the tests pick one), appends `--tasks` finished tasks to one
queue in big batches (submit, assign, start, complete; about 3% fail once and are retried;
timestamps in the past) with the worker state a worker that folded them leaves on the log
(row and relay changelogs, committed offsets: bench/restart_history.py; `--fold-history`
lets the first worker fold the events itself instead, about a thousand a second), then
starts a worker and one demo agent serving that queue (`-q queue=1`) and waits until a
probe task completes: the worker has the history.
Then, three times, it stops the worker, appends a probe while it is down, starts it again
and measures process start -> the worker's "assigned partitions ..." line (faust start and
group join) -> its "ready: partitions ..." line (table recovery, `Scheduler.load`) -> the
probe's TaskAssigned (its occurred_at is the worker's clock, read back from the log). The
target is partitions -> probe assigned within 3 s:

  clean   SIGTERM, restarted on the same state directory (the local store is kept)
  killed  SIGKILL, same directory (the store is discarded, recovery from the changelog)
  fresh   a new worker id, so a new, empty state directory

with the worker's peak RSS and CPU seconds from its start to the probe's assignment.
Prints a table, then one JSON line. A benchmark, not a test: the machine's load shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import psutil

from taskfold.broker.harness import start_broker
from taskfold.broker.topics import TopicNames, ensure_topics, queue_partition
from taskfold.cli.cluster import LocalCluster
from taskfold.core.edge import now_ms
from taskfold.core.events import Event, TaskAssigned, TaskCompleted
from taskfold.core.requests import submission
from taskfold.core.testing import Events
from taskfold.log.eventlog import EventLog, Recorded
from taskfold.log.records import RawRecord
from taskfold.log.wire import encode_event
from taskfold.log.writer import LogWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
import restart_history  # noqa: E402

QUEUE = "restart-q"
HISTORY_AGENT = "history-agent"
WAVE = 16  # tasks in flight at once in the history: the history agent's slots
READY = "ready: partitions"
ASSIGNED = "assigned partitions"
TIMEOUT_S = 600.0


def history(tasks: int, seed: int = 1) -> Iterator[Event]:
    """`tasks` finished tasks of QUEUE in waves; every 33rd fails once and is retried."""
    e = Events(queue=QUEUE, seed=f"history-{seed}")
    now = now_ms() - 24 * 3600 * 1000  # in the past: never ahead of the broker's clock

    def at() -> int:
        nonlocal now
        now += 1
        return now

    yield e.join(HISTORY_AGENT, slots=WAVE, at=at())
    for first in range(0, tasks, WAVE):
        wave = [f"h-{n}" for n in range(first, min(first + WAVE, tasks))]
        for task in wave:
            yield e.submit(task, at=at(), max_attempts=3, idempotency_key=f"key-{task}")
        for attempt in (1, 2):
            for task in wave:
                yield e.assign(task, HISTORY_AGENT, attempt=attempt, at=at())
                yield e.start(task, HISTORY_AGENT, attempt=attempt, at=at())
            retried = []
            for n, task in enumerate(wave):
                if attempt == 1 and (first + n) % 33 == 0:
                    yield e.fail(task, HISTORY_AGENT, attempt=1, retryable=True, at=at())
                    retried.append(task)
                else:
                    yield e.complete(task, HISTORY_AGENT, attempt=attempt, result='{"ok": true}', at=at())
            now += 5_000  # the retry is due by the next round
            wave = retried
            if not wave:
                break
    yield e.leave(HISTORY_AGENT, at=at())


async def append_history(bootstrap: str, tansu: bool, topics: TopicNames, tasks: int) -> tuple[int, float]:
    """Append the history in big batches; (events appended, seconds)."""
    started, count, chunk = time.perf_counter(), 0, []
    async with LogWriter(bootstrap, tansu=tansu) as writer:
        for event in history(tasks):
            value, headers = encode_event(event)
            chunk.append(RawRecord(key=event.queue, value=value, headers=headers))
            if len(chunk) >= 20_000:
                await writer.append(topics.events, chunk)
                count, chunk = count + len(chunk), []
                print(f"\rappended {count:,}", end="", file=sys.stderr, flush=True)
        if chunk:
            await writer.append(topics.events, chunk)
            count += len(chunk)
    print(file=sys.stderr)
    return count, time.perf_counter() - started


class LineWatch:
    """Wall time (s) at which a line containing `text` first appears in a log after `offset` bytes."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text
        self.offset = path.stat().st_size if path.exists() else 0
        self.seen: float | None = None
        self.line = ""

    def poll(self) -> bool:
        if self.seen is None and self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self.offset)
                for raw in f.read().decode(errors="replace").splitlines():
                    if self.text in raw:
                        self.seen, self.line = time.time(), raw.strip()
                        break
        return self.seen is not None


class WorkerSampler:
    """Peak RSS and CPU seconds of one process (and its children), sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak, self.cpu = 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        try:
            self.peak = max(self.peak, self.process.memory_info().rss)
            t = self.process.cpu_times()
            self.cpu = t.user + t.system
        except psutil.Error:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __enter__(self) -> WorkerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


async def probe(log: EventLog, tag: str) -> tuple[str, int, int]:
    """Append one echo task to QUEUE; (task id, its partition, its offset)."""
    task = f"probe-{tag}-{uuid.uuid4().hex[:6]}"
    event = submission(QUEUE, "echo", payload="null", task_id=task, occurred_at=now_ms(), actor="bench")
    [where] = await log.append([event])
    return task, where.partition, where.offset


async def outcome(log: EventLog, task: str, partition: int, offset: int, want: type, deadline: float) -> int:
    """The occurred_at of the first `want` event of `task` at or after `offset`."""
    stream = log.read(start={partition: offset}, live=True)
    async with aclosing(stream) as entries:
        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
            async for entry in entries:
                if isinstance(entry, Recorded) and isinstance(entry.event, want) and entry.event.task_id == task:
                    return entry.event.occurred_at
    raise RuntimeError(f"the log ended before {task} was {want.__name__}")


async def wait_line(watch: LineWatch, process: object, deadline: float, tails: callable) -> float:
    """The wall time of the watched line; RuntimeError if the process exits or the deadline passes."""
    while not watch.poll():
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited before {watch.text!r}:\n{tails()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {watch.text!r} within {TIMEOUT_S} s:\n{tails()}")
        await asyncio.sleep(0.01)
    return watch.seen


async def restart(cluster: LocalCluster, log: EventLog, name: str, how: str, args: argparse.Namespace) -> dict:
    """Stop the worker as `how` says, append a probe, start `name` and time it to the probe's assignment."""
    if how == "killed":
        cluster.kill("worker")
    else:
        cluster.stop("worker", timeout=60)
    task, partition, offset = await probe(log, how)
    path = cluster.log_dir / "worker.log"
    ready, joined = LineWatch(path, READY), LineWatch(path, ASSIGNED)
    begun = time.time()
    process = cluster.spawn("worker", "worker", "--worker-id", name, *shlex.split(args.worker_args))
    deadline = time.monotonic() + TIMEOUT_S
    with WorkerSampler(process.pid) as sampler:
        assigned = asyncio.create_task(outcome(log, task, partition, offset, TaskAssigned, deadline))
        joined_at = await wait_line(joined, process, deadline, cluster.tails)
        ready_at = await wait_line(ready, process, deadline, cluster.tails)
        assigned_at = await assigned / 1000
    await outcome(log, task, partition, offset, TaskCompleted, time.monotonic() + TIMEOUT_S)
    return {"how": how, "start_to_assigned_partitions_s": round(joined_at - begun, 2),
            "partitions_to_ready_s": round(ready_at - joined_at, 2), "start_to_ready_s": round(ready_at - begun, 2),
            "partitions_to_first_assignment_s": round(assigned_at - joined_at, 2),
            "ready_to_assigned_s": round(assigned_at - ready_at, 2), "start_to_assigned_s": round(assigned_at - begun, 2),
            "worker_peak_rss_mb": round(sampler.peak / 2**20), "worker_cpu_s": round(sampler.cpu, 2),
            "ready_line": ready.line.split(": ", 1)[-1]}


async def run(args: argparse.Namespace) -> dict:
    broker = start_broker()
    topics = TopicNames(f"bench.{uuid.uuid4().hex[:8]}.")
    work = Path(tempfile.mkdtemp(prefix="taskfold-restart-"))
    cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, work / "state", log_dir=work)
    try:
        await ensure_topics(broker.bootstrap, topics, partitions=args.partitions)
        if args.fold_history:
            appended, append_s = await append_history(broker.bootstrap, broker.is_tansu, topics, args.tasks)
        else:
            started = time.perf_counter()
            appended = await restart_history.build(broker.bootstrap, broker.is_tansu, topics, args.partitions,
                                                   history(args.tasks))
            append_s = time.perf_counter() - started
        async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
            begun = time.time()
            cluster.spawn("worker", "worker", "--worker-id", "worker-1", *shlex.split(args.worker_args))
            cluster.agent("agent-1", "-q", f"{QUEUE}=1")
            task, partition, offset = await probe(log, "first")
            await outcome(log, task, partition, offset, TaskCompleted, time.monotonic() + TIMEOUT_S)
            first_s = time.time() - begun
            print(f"first start folded the history: the first probe completed after {first_s:.1f} s",
                  file=sys.stderr)
            runs = []
            names = {"clean": "worker-1", "killed": "worker-1", "fresh": "worker-fresh"}
            for how in args.restarts.split(","):
                runs.append(await restart(cluster, log, names[how], how, args))
                print(f"  {how}: {runs[-1]}", file=sys.stderr)
        return {"bench": "restart", "tasks": args.tasks, "events": appended, "partitions": args.partitions,
                "append_events_per_second": round(appended / append_s), "first_start_to_probe_done_s": round(first_s, 1),
                "runs": runs, "worker_args": args.worker_args, "broker": broker.kind,
                "machine": f"{platform.machine()} {os.cpu_count()} cores (shared), Python {platform.python_version()}"}
    finally:
        cluster.stop_all(timeout=30)
        broker.stop()
        if args.keep:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="finished tasks of history")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--worker-args", default="--tick-ms 50", help="extra `taskfold worker` arguments")
    parser.add_argument("--restarts", default="clean,killed,fresh", help="which restarts to measure, in order")
    parser.add_argument("--keep", action="store_true", help="keep the state directory and the process logs")
    parser.add_argument("--fold-history", action="store_true",
                        help="let the first worker fold the history (slow) instead of appending its worker state")
    args = parser.parse_args()
    out = asyncio.run(run(args))
    print(f"worker restart with {out['tasks']:,} finished tasks ({out['events']:,} events) on one queue, "
          f"{out['broker']}; {out['machine']}")
    columns = [("start->partitions s", "start_to_assigned_partitions_s"), ("partitions->ready s", "partitions_to_ready_s"),
               ("ready->probe assigned s", "ready_to_assigned_s"), ("partitions->probe assigned s", "partitions_to_first_assignment_s"),
               ("peak RSS MB", "worker_peak_rss_mb"), ("CPU s", "worker_cpu_s")]
    print(f"  {'restart':8} " + " ".join(f"{title:>{len(title)}}" for title, _ in columns))
    for r in out["runs"]:
        print(f"  {r['how']:8} " + " ".join(f"{r[key]:>{len(title)}}" for title, key in columns))
    print(json.dumps(out))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the children too
    main()
