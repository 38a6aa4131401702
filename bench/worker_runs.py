"""Table writes per event and CPU per event of the worker's processor, one record at a time vs in runs.

A 1-slot burst as the worker reads it, without a broker: agents join, every task is
submitted, then each task's assignment, start and completion arrive (the agent's start
and outcome in one batch). `--run N` hands the processor N records at a time (what faust
has buffered); `--run 1` is the old one-record path. Prints table writes per event,
appends (produce calls) per event and CPU µs per event.

    .venv/bin/python bench/worker_runs.py --tasks 2000 --run 1
    .venv/bin/python bench/worker_runs.py --tasks 2000 --run 50
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.processor import Always, Processor  # noqa: E402
from streams.scheduler import Scheduler  # noqa: E402
from taskfold.broker.topics import queue_partition  # noqa: E402
from taskfold.core.testing import Events  # noqa: E402
from taskfold.log.records import ConsumedRecord  # noqa: E402
from taskfold.log.wire import encode_event  # noqa: E402

PARTITION = queue_partition("q", 4)


class Counting(dict):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes += 1
        super().__setitem__(key, value)


class Outbox:
    def __init__(self) -> None:
        self.calls, self.events = 0, []

    async def append(self, events: list) -> None:
        self.calls += 1
        self.events.extend(events)

    async def quarantine(self, record: ConsumedRecord, reason: str) -> None:
        raise AssertionError(reason)


async def main(tasks: int, run: int) -> None:
    e, store, outbox = Events(), Counting(), Outbox()
    processor = Processor(Scheduler(store, partitions=4), outbox, Always(), clock_ms=lambda: e.now)
    offset = 0

    async def feed(events: list) -> None:
        nonlocal offset
        records = []
        for event in events:
            value, headers = encode_event(event)
            records.append(ConsumedRecord("events", PARTITION, offset, None, "q", value, tuple(headers)))
            offset += 1
        for i in range(0, len(records), run):
            if run == 1:
                await processor.on_record(records[i])
            else:
                await processor.on_records(records[i:i + run])

    cpu = time.process_time()
    await feed([e.join(f"a{i}", slots=1, prefetch=4) for i in range(4)])
    await feed([e.submit(f"t{i}") for i in range(tasks)])
    done: set[str] = set()
    while len(done) < tasks:
        assigned, outbox.events = outbox.events, []
        reports = []
        for a in assigned:
            reports += [e.start(a.task_id, a.agent_id, attempt=a.attempt), e.complete(a.task_id, a.agent_id, attempt=a.attempt)]
            done.add(a.task_id)
        if not assigned:
            outbox.events = await processor.on_tick()
            continue
        await feed(assigned + reports)
    cpu = time.process_time() - cpu
    print(f"run {run}: {offset} events, table writes/event {store.writes / offset:.2f}, "
          f"appends/event {outbox.calls / offset:.3f}, CPU µs/event {cpu / offset * 1e6:.0f}, "
          f"counts {dict(Counter(processor.counts))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--run", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.run))
