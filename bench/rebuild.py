"""Projection rebuild speed: N events appended to a real broker, then rebuilt from offset 0.

    .venv/bin/python bench/rebuild.py [--events 1000000] [--queues 10] [--agents 20] [--views all|none]
                                      [--profile rebuild.prof]

Starts its own broker (TASKFOLD_BOOTSTRAP, a container or Tansu, as the tests do), appends
a realistic mix in big batches (waves of submit/assign/start/complete per queue, about 7%
retryable failures retried, 2% dead letters, 1% cancels), then runs the rebuild in a child
process, so its peak RSS is the rebuild's alone. Prints events/s, wall seconds, events per
CPU second of that process (steadier than wall time on a shared machine; the broker's own
work is not in it), peak RSS and the store's size on disk, then one JSON line. Tansu keeps the log in memory: a
million events of about 300 bytes fit easily.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from taskfold.broker.harness import start_broker
from taskfold.broker.topics import TopicNames, ensure_topics
from taskfold.core.events import Event
from taskfold.log.records import RawRecord
from taskfold.log.writer import LogWriter
from taskfold.core.testing import Events
from taskfold.log.wire import encode_event

WAVE = 16  # tasks a queue takes per round: its two agents' slots


def workload(events: int, queues: int, agents: int, seed: int = 1) -> Iterator[Event]:
    """About `events` events: each queue in waves of submit, assign, start and an outcome."""
    rng = random.Random(seed)
    now = 1_700_000_000_000  # in the past: the fold rejects stamps beyond the skew bound ahead of the broker
    names = [f"queue-{q}" for q in range(queues)]
    makers = {q: Events(queue=q, seed=q) for q in names}
    seats = {q: [f"agent-{a}" for a in range(agents) if a % queues == i] or [f"agent-{i % agents}"]
             for i, q in enumerate(names)}
    slots = {q: -(-WAVE // len(seats[q])) for q in names}
    retries: dict[str, list[tuple[str, int]]] = {q: [] for q in names}
    made, counter = 0, 0

    def at() -> int:
        nonlocal now
        now += 1
        return now

    for q in names:
        for agent in seats[q]:
            made += 1
            yield makers[q].join(agent, slots=slots[q], at=at())
    while made < events:
        for q in names:
            e, wave = makers[q], list(retries[q])
            retries[q] = []
            while len(wave) < WAVE:
                counter += 1
                task = f"task-{counter}"
                made += 1
                yield e.submit(task, at=at(), priority=rng.choice(["critical", "high", "medium", "low"]),
                               max_attempts=3, idempotency_key=f"key-{counter}")
                if rng.random() < 0.01:
                    made += 1
                    yield e.cancel(task, at=at())
                    continue
                wave.append((task, 1))
            held = [(task, attempt, seats[q][i % len(seats[q])]) for i, (task, attempt) in enumerate(wave)]
            for task, attempt, agent in held:
                made += 2
                yield e.assign(task, agent, attempt=attempt, at=at())
                yield e.start(task, agent, attempt=attempt, at=at())
            for task, attempt, agent in held:
                roll = rng.random()
                made += 1
                if roll < 0.07:
                    yield e.fail(task, agent, attempt=attempt, retryable=True, at=at())
                    if attempt < 3:
                        retries[q].append((task, attempt + 1))
                elif roll < 0.09:
                    yield e.fail(task, agent, attempt=attempt, retryable=False, error="bad input", at=at())
                else:
                    yield e.complete(task, agent, attempt=attempt, result='{"ok": true}', at=at())
        now += 5_000  # every retry is due by the next wave (at most 4 s for a third attempt)


async def append(bootstrap: str, tansu: bool, topics: TopicNames, args: argparse.Namespace) -> tuple[int, float]:
    """Append the workload in big batches; (events appended, seconds)."""
    started = time.perf_counter()
    count = 0
    async with LogWriter(bootstrap, tansu=tansu) as writer:
        chunk: list[RawRecord] = []
        for event in workload(args.events, args.queues, args.agents):
            value, headers = encode_event(event)
            chunk.append(RawRecord(key=event.queue, value=value, headers=headers))
            if len(chunk) >= 20_000:
                await writer.append(topics.events, chunk)
                count += len(chunk)
                chunk = []
                print(f"\rappended {count:,}", end="", file=sys.stderr, flush=True)
        if chunk:
            await writer.append(topics.events, chunk)
            count += len(chunk)
    print(file=sys.stderr)
    return count, time.perf_counter() - started


def measure(bootstrap: str, tansu: bool, prefix: str, store: str, views: str, profile: str = "") -> None:
    """In the child: rebuild the store and print the report as JSON."""
    from projections.rebuild import rebuild

    chosen: list = []
    if views == "all":
        from projections.views import all_views
        chosen = list(all_views())
    cpu = time.process_time()
    work = rebuild(bootstrap, TopicNames(prefix), store, chosen, tansu=tansu)
    if profile:  # cProfile of the whole child: pstats.Stats(path).sort_stats("cumtime")
        import cProfile
        with cProfile.Profile() as profiler:
            report = asyncio.run(work)
        profiler.dump_stats(profile)
    else:
        report = asyncio.run(work)
    cpu = time.process_time() - cpu
    print(json.dumps({
        "events": report.events, "poison": report.poison, "verdicts": report.verdicts,
        "seconds": report.seconds, "events_per_second": report.events_per_second, "cpu_seconds": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "views": [getattr(v, "name", type(v).__name__) for v in chosen],
    }))


def disk_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def run(args: argparse.Namespace) -> dict:
    broker = start_broker()
    topics = TopicNames(f"bench.{uuid.uuid4().hex[:8]}.")
    work = Path(tempfile.mkdtemp(prefix="taskfold-rebuild-"))
    try:
        await ensure_topics(broker.bootstrap, topics, partitions=args.partitions)
        appended, append_seconds = await append(broker.bootstrap, broker.is_tansu, topics, args)
        store = work / "store"
        child = subprocess.run(
            [sys.executable, __file__, "--child", broker.bootstrap, str(int(broker.is_tansu)), topics.prefix,
             str(store), args.views, args.profile], capture_output=True, text=True, check=False)
        if child.returncode != 0:
            raise SystemExit(f"the rebuild failed:\n{child.stderr}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        return {
            "bench": "rebuild", "events": appended, "queues": args.queues, "agents": args.agents,
            "partitions": args.partitions, "append_events_per_second": round(appended / append_seconds),
            "rebuild_seconds": round(result["seconds"], 2), "events_per_second": round(result["events_per_second"]),
            "rebuild_cpu_seconds": round(result["cpu_seconds"], 2),
            "events_per_cpu_second": round(result["events"] / result["cpu_seconds"]),
            "peak_rss_mb": round(result["peak_rss_mb"]), "store_mb": round(disk_size(store) / 2**20, 1),
            "verdicts": result["verdicts"], "poison": result["poison"], "views": result["views"],
            "broker": broker.kind, "machine": f"{platform.machine()} {os.cpu_count()} cores, "
                                              f"Python {platform.python_version()}",
        }
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        bootstrap, tansu, prefix, store, views, profile = sys.argv[2:8]
        measure(bootstrap, tansu == "1", prefix, store, views, profile)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queues", type=int, default=10)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--views", choices=["all", "none"], default="all",
                        help="all: projections.views.all_views(); none: the fold and offsets only")
    parser.add_argument("--profile", default="", metavar="PATH",
                        help="write a cProfile of the rebuild child there (its figures are then not comparable)")
    args = parser.parse_args()
    out = asyncio.run(run(args))
    print(f"rebuilt {out['events']:,} events ({out['queues']} queues, {out['agents']} agents, "
          f"{out['partitions']} partitions, views: {', '.join(out['views']) or 'none'}) on {out['broker']}")
    print(f"  {out['events_per_second']:,} events/s, {out['rebuild_seconds']} s wall "
          f"({out['events_per_cpu_second']:,} events per CPU second of the rebuild process), "
          f"peak RSS {out['peak_rss_mb']} MB, store {out['store_mb']} MB on disk")
    print(f"  (appended at {out['append_events_per_second']:,} events/s; verdicts {out['verdicts']}; "
          f"{out['machine']})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
