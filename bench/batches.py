"""Batches per task: how many record batches a burst leaves in its queue's partition.

    .venv/bin/python bench/batches.py [--tasks 1000] [--agents 4] [--slots 1] [--handler echo]

It runs one burst exactly as `bench/standard.py --mode burst --runs 1` does (same broker,
worker, gateway, demo agents and driver, imported from it), then reads the batch
boundaries of the queue's `events` partition back from the broker
(`taskfold.log.batches`) and prints records and batches per task, events per batch, and
events per batch for each event type (among the batches holding that type). It also
counts the scheduler's changelog records (its row writes). A Tansu Fetch lists every
batch of the partition (BROKER.md), so batches per task is what every reader pays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from standard import Readback, processes_of, run_queues, start_cluster, taskfold_run  # noqa: E402

from taskfold.broker.harness import start_broker  # noqa: E402
from taskfold.broker.topics import TopicNames, ensure_topics, queue_partition  # noqa: E402
from taskfold.cli.cluster import LocalCluster  # noqa: E402
from taskfold.log.batches import by_type, read_batches, summary  # noqa: E402
from taskfold.log.eventlog import EventLog  # noqa: E402


async def run(args: argparse.Namespace) -> dict:
    """One burst, then the batch census of its partition and of the scheduler's changelog."""
    broker = start_broker()
    topics = TopicNames(f"bench.{uuid.uuid4().hex[:8]}.")
    state = Path(tempfile.mkdtemp(prefix="taskfold-batches-"))
    (queue,) = run_queues("burst", 1, args.partitions)
    try:
        await ensure_topics(broker.bootstrap, topics, partitions=args.partitions)
        cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, state / "state", log_dir=state)
        try:
            async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log, Readback(log) as back:
                await start_cluster(cluster, args, [queue], back, state)
                partition = queue_partition(queue, args.partitions)
                before = (await log.end_offsets())[partition]  # the seats' AgentJoined
                result = await taskfold_run(args, "burst", queue, log, back, processes_of(cluster))
                batches = await read_batches(broker.bootstrap, topics.events, partition, start=before)
                rows = await _changelog(broker.bootstrap, log, f"{topics.prefix}scheduler-rows-changelog")
        finally:
            cluster.stop_all(timeout=20)
    finally:
        broker.stop()
    census = summary(batches)
    n = result["completed"] or 1
    return {"tasks": args.tasks, "completed": result["completed"], "tasks_per_s": result["tasks_per_s"],
            **census, "batches_per_task": round(census["batches"] / n, 3),
            "events_per_task": round(census["records"] / n, 3), "events_per_batch_by_type": by_type(batches),
            "changelog_records_per_task": round(rows["records"] / n, 3),
            "changelog_batches_per_task": round(rows["batches"] / n, 3),
            "cpu_s": {name: p["cpu_s"] for name, p in result["processes"].items()}}


async def _changelog(bootstrap: str, log: EventLog, topic: str) -> dict[str, int]:
    """Records and batches over every partition of the scheduler's rows changelog."""
    totals = {"records": 0, "batches": 0}
    for partition in await log.reader.partitions(topic):
        found = summary(await read_batches(bootstrap, topic, partition))
        totals["records"] += found["records"]
        totals["batches"] += found["batches"]
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--handler", default="echo")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--stall-s", type=float, default=30)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=1))


if __name__ == "__main__":
    main()
