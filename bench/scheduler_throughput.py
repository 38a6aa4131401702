"""Scheduler throughput and latency: N no-op tasks through workers and agents on a real broker.

    .venv/bin/python bench/scheduler_throughput.py [--tasks 5000] [--agents 4] [--slots 1] [--workers 1]

Starts its own broker (TASKFOLD_BOOTSTRAP, a container or Tansu, as the tests do), one or
more `taskfold worker` processes and demo agents, submits every task at once, and reads
the outcome back from the log. Latencies are from the submit's ack to the moment the
TaskStarted (or TaskCompleted) was read back by this process, so they include the
read-back delay. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
import uuid
from pathlib import Path

from taskfold.broker.harness import start_broker
from taskfold.broker.topics import TopicNames, ensure_topics
from taskfold.core.requests import submission
from taskfold.cli.cluster import LocalCluster, LogWatcher
from taskfold.core.events import TaskCompleted, TaskStarted
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import EventLog
from taskfold.core.state import TaskState
from workload import percentile  # bench/ is on sys.path when a script here runs

QUEUE = "bench"



async def run(args: argparse.Namespace) -> dict:
    broker = start_broker()
    topics = TopicNames(f"bench.{uuid.uuid4().hex[:8]}.")
    state = Path(tempfile.mkdtemp(prefix="taskfold-bench-"))
    try:
        await ensure_topics(broker.bootstrap, topics, partitions=args.partitions)
        cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, state / "state", log_dir=state)
        async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log, LogWatcher(log) as watcher:
            try:
                return await measure(args, cluster, log, watcher, broker.kind)
            finally:
                cluster.stop_all(timeout=20)
    finally:
        broker.stop()


async def measure(args, cluster: LocalCluster, log: EventLog, watcher: LogWatcher, kind: str) -> dict:
    for n in range(args.workers):
        cluster.worker(f"worker-{n + 1}", "--tick-ms", "50")
    agents = [f"bench-agent-{n}" for n in range(args.agents)]
    for agent in agents:
        cluster.agent(agent, "-q", f"{QUEUE}={args.slots}")
    await watcher.wait_for(lambda l: len(l.state(QUEUE).members) == len(agents), 60, "agents joined")
    events = [submission(QUEUE, "echo", task_id=f"task-{i}") for i in range(args.tasks)]
    started = time.monotonic()
    acked_at: dict[str, float] = {}
    for chunk in range(0, len(events), 1000):
        batch = events[chunk:chunk + 1000]
        await log.append(batch)
        now = time.monotonic()
        acked_at.update((e.task_id, now) for e in batch)
    submitted = time.monotonic() - started
    await watcher.wait_for(lambda l: _done(l, args.tasks), args.timeout, f"{args.tasks} tasks completed")
    elapsed = time.monotonic() - started
    starts = {e.task_id: watcher.seen_at[e.event_id] for e, v in watcher.entries if isinstance(e, TaskStarted) and v.accepted}
    ends = {e.task_id: watcher.seen_at[e.event_id] for e, v in watcher.entries if isinstance(e, TaskCompleted) and v.accepted}
    to_start = [(starts[t] - acked_at[t]) * 1000 for t in starts]
    to_end = [(ends[t] - acked_at[t]) * 1000 for t in ends]
    return {
        "tasks": args.tasks, "agents": args.agents, "slots": args.slots, "workers": args.workers, "broker": kind,
        "machine": f"{platform.machine()} {platform.python_version()}", "submit_s": round(submitted, 2),
        "elapsed_s": round(elapsed, 2), "tasks_per_s": round(args.tasks / elapsed, 1),
        "start_p50_ms": round(percentile(to_start, 50), 1), "start_p99_ms": round(percentile(to_start, 99), 1),
        "complete_p50_ms": round(percentile(to_end, 50), 1), "complete_p99_ms": round(percentile(to_end, 99), 1),
    }


def _done(ledger: Ledger, n: int) -> bool:
    tasks = ledger.state(QUEUE).tasks
    return len(tasks) >= n and all(t.state == TaskState.completed for t in tasks.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=600)
    result = asyncio.run(run(parser.parse_args()))
    width = max(len(k) for k in result)
    for name, value in result.items():
        print(f"{name:<{width}}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
