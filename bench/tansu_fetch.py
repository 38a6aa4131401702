"""What one tailing Fetch costs the broker, against how many batches the partition holds.

    .venv/bin/python bench/tansu_fetch.py [--sizes 1000,5000,15000] [--appends 100] [--batch 1]

For each size it fills a fresh one-partition topic with that many batches (`--batch`
records each), then a consumer tails the end while `--appends` single-record batches are
appended one by one, and the broker's CPU time over those appends is divided by their
number. Run it against the broker the tests would pick (TASKFOLD_BROKER=tansu for the
embedded one). On Tansu 0.6.0 (memory storage) the cost grows with the batches already in
the partition, so every consumer of a busy queue's partition pays more per batch as the
queue's history grows. Kafka looks the offset up in an index and stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
import uuid

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from taskfold.broker.harness import Broker, start_broker


def broker_process(broker: Broker) -> psutil.Process | None:
    """The broker, when it is our child (Tansu); None for an external one."""
    for child in psutil.Process().children(recursive=True):
        if "tansu" in " ".join(child.cmdline()).lower():
            return child
    return None


def cpu_s(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    t = process.cpu_times()
    return t.user + t.system


async def fill(bootstrap: str, topic: str, batches: int, per_batch: int) -> None:
    """`batches` batches of `per_batch` 200-byte records: each batch is awaited before the next."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, max_batch_size=1 << 20)
    await producer.start()
    try:
        for _ in range(batches):
            sent = [await producer.send(topic, b"x" * 200, partition=0) for _ in range(per_batch)]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def tail_cost(bootstrap: str, topic: str, start: int, appends: int, broker: psutil.Process | None) -> dict:
    """Broker CPU ms and wall ms per appended batch while one consumer tails the partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, start)
    seen = 0

    async def consume() -> None:
        nonlocal seen
        while seen < appends:
            got = await consumer.getmany(timeout_ms=10)
            seen += sum(len(v) for v in got.values())

    try:
        cpu0, t0 = cpu_s(broker), time.perf_counter()
        reader = asyncio.create_task(consume())
        for _ in range(appends):
            await (await producer.send(topic, b"y" * 200, partition=0))
        await asyncio.wait_for(reader, 120)
        return {"broker_cpu_ms_per_append": round((cpu_s(broker) - cpu0) * 1000 / appends, 3),
                "wall_ms_per_append": round((time.perf_counter() - t0) * 1000 / appends, 3)}
    finally:
        await producer.stop()
        await consumer.stop()


async def main(args: argparse.Namespace) -> None:
    with start_broker() as broker:
        process = broker_process(broker)
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            for size in args.sizes:
                topic = f"fetchcost-{uuid.uuid4().hex[:8]}"
                await admin.create_topics([NewTopic(topic, 1, 1)])
                await fill(broker.bootstrap, topic, size, args.batch)
                cost = await tail_cost(broker.bootstrap, topic, size * args.batch, args.appends, process)
                print(json.dumps({"broker": broker.kind, "batches_in_partition": size, "records_per_batch": args.batch,
                                  **cost, "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs"}), flush=True)
        finally:
            await admin.close()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,15000",
                        type=lambda s: [int(x) for x in s.split(",")], help="batches in the partition, comma-separated")
    parser.add_argument("--batch", type=int, default=1, help="records per filling batch")
    parser.add_argument("--appends", type=int, default=100, help="single-record appends measured per size")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
