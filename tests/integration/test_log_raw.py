"""The raw log client against a real broker: append, read to the end, from an offset, live."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from aiokafka.errors import UnknownTopicOrPartitionError

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicMismatchError, TopicNames, describe_topic_configs, ensure_topics
from taskfold.log import ConsumedRecord, LogReader, LogWriter, RawRecord

pytestmark = pytest.mark.integration

PARTITIONS = 4  # tests/conftest.py creates the topics with this many


@pytest.fixture
async def writer(broker: Broker) -> AsyncIterator[LogWriter]:
    async with LogWriter(broker.bootstrap, tansu=broker.is_tansu) as w:
        yield w


@pytest.fixture
async def reader(broker: Broker) -> AsyncIterator[LogReader]:
    async with LogReader(broker.bootstrap, tansu=broker.is_tansu) as r:
        yield r


def records(n: int, queues: int = 20, tag: str = "r") -> list[RawRecord]:
    return [
        RawRecord(f"queue-{i % queues}", f"{tag}{i}".encode().ljust(200, b"."), [("type", b"T"), ("i", str(i).encode())])
        for i in range(n)
    ]


async def read_all(reader: LogReader, topic: str, **kwargs: object) -> list[ConsumedRecord]:
    return [r async for r in reader.read(topic, **kwargs)]


async def test_append_10000_and_read_them_back_in_order(
    writer: LogWriter, reader: LogReader, topics: TopicNames, record_property: pytest.RecordProperty
) -> None:
    sent = records(10_000)
    t0 = time.perf_counter()
    positions = await writer.append(topics.events, sent)
    append_s = time.perf_counter() - t0

    assert len(positions) == len(sent)
    assert len(set(positions)) == len(sent)
    assert {p.partition for p in positions} == set(range(PARTITIONS))  # 20 keys spread out
    by_key: dict[str, set[int]] = defaultdict(set)
    last: dict[int, int] = {}
    for record, pos in zip(sent, positions):
        by_key[record.key].add(pos.partition)
        # Input order is append order within a partition.
        assert pos.offset > last.get(pos.partition, -1)
        last[pos.partition] = pos.offset
    assert all(len(parts) == 1 for parts in by_key.values()), "a key must stay on one partition"

    t0 = time.perf_counter()
    got = await read_all(reader, topics.events)
    read_s = time.perf_counter() - t0

    assert len(got) == len(sent)
    per_partition: dict[int, list[int]] = defaultdict(list)
    for r in got:
        per_partition[r.partition].append(r.offset)
    for partition, offsets in per_partition.items():
        assert offsets == list(range(len(offsets))), f"partition {partition} out of order or with gaps"
    sent_at = {pos: rec for rec, pos in zip(sent, positions)}
    for r in got:
        original = sent_at[r.position]
        assert (r.key, r.value, r.header("i")) == (original.key, original.value, original.headers[1][1])
        assert r.headers == tuple(original.headers)
        assert r.timestamp > 0

    assert await reader.end_offsets(topics.events) == {p: len(per_partition[p]) for p in range(PARTITIONS)}
    record_property("append_per_s", round(len(sent) / append_s))
    record_property("read_per_s", round(len(sent) / read_s))
    print(f"\n10,000 x 200 B: append {len(sent) / append_s:,.0f}/s, read {len(sent) / read_s:,.0f}/s")


async def test_read_from_an_offset(writer: LogWriter, reader: LogReader, topics: TopicNames) -> None:
    # 30 records per partition, each partition's records appended as one batch, so most
    # start offsets fall inside a batch (Tansu then returns the whole batch).
    sent = [RawRecord("k", f"p{p}-{i}".encode(), partition=p) for p in range(PARTITIONS) for i in range(30)]
    await writer.append(topics.events, sent)

    same = await read_all(reader, topics.events, start=17)
    assert len(same) == PARTITIONS * 13
    assert {(r.partition, r.offset) for r in same} == {(p, o) for p in range(PARTITIONS) for o in range(17, 30)}
    assert all(r.value == f"p{r.partition}-{r.offset}".encode() for r in same)

    mixed = await read_all(reader, topics.events, partitions=[1, 2, 3], start={1: 29, 2: 5})
    counts = defaultdict(int)
    for r in mixed:
        counts[r.partition] += 1
    assert counts == {1: 1, 2: 25, 3: 30}  # partition 3 is not in `start`: from the beginning
    assert min(r.offset for r in mixed if r.partition == 2) == 5

    assert await read_all(reader, topics.events, start=30) == []  # already at the end


async def test_read_to_end_stops_at_the_end_captured_when_it_began(
    writer: LogWriter, reader: LogReader, topics: TopicNames
) -> None:
    await writer.append(topics.events, records(100))
    got = []
    async for r in reader.read(topics.events):
        if not got:
            # Appended after the end was captured: not part of this read.
            await writer.append(topics.events, records(100, tag="late"))
        got.append(r)
    assert len(got) == 100
    assert not any(r.value.startswith(b"late") for r in got)
    assert sum((await reader.end_offsets(topics.events)).values()) == 200


async def test_empty_topic_reads_nothing(reader: LogReader, topics: TopicNames) -> None:
    assert await read_all(reader, topics.progress) == []
    assert await reader.end_offsets(topics.progress) == dict.fromkeys(range(PARTITIONS), 0)


async def test_live_read_sees_records_appended_after_it_started(
    writer: LogWriter, reader: LogReader, topics: TopicNames
) -> None:
    seen: list[ConsumedRecord] = []

    async def tail() -> None:
        async with contextlib.aclosing(reader.read(topics.events, live=True)) as stream:
            async for r in stream:
                seen.append(r)

    async def until(n: int, timeout: float) -> float:
        t0 = time.monotonic()
        while len(seen) < n:
            assert not task.done(), task.exception() if task.done() else None
            assert time.monotonic() - t0 < timeout, f"live reader saw {len(seen)} of {n} records"
            await asyncio.sleep(0.005)
        return time.monotonic() - t0

    await writer.append(topics.events, records(10, tag="before"))
    task = asyncio.create_task(tail())
    try:
        await until(10, timeout=10)  # the reader is running now
        t0 = time.monotonic()
        late = await writer.append(topics.events, records(10, tag="after"))
        await until(20, timeout=5)
        latency = time.monotonic() - t0
        assert {r.position for r in seen[10:]} == set(late)
        assert all(r.value.startswith(b"after") for r in seen[10:])
        print(f"\nlive read latency (append + delivery): {latency * 1000:.0f} ms")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(seen) == 20


async def test_reading_an_unknown_topic_fails_and_does_not_create_it(
    broker: Broker, reader: LogReader, topics: TopicNames
) -> None:
    missing = topics.prefix + "missing"
    with pytest.raises(UnknownTopicOrPartitionError):
        await read_all(reader, missing)
    with pytest.raises(UnknownTopicOrPartitionError):
        await reader.partitions(missing)


async def test_ensure_topics_is_idempotent_and_sets_configs(broker: Broker, topics: TopicNames) -> None:
    again = await ensure_topics(broker.bootstrap, topics, partitions=PARTITIONS)
    assert again == dict.fromkeys(topics.all(), False)

    configs = await describe_topic_configs(broker.bootstrap, topics.all())
    assert configs[topics.events]["retention.ms"] == "-1"
    assert configs[topics.heartbeats]["cleanup.policy"] == "compact"
    assert configs[topics.progress]["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert configs[topics.poison]["retention.ms"] == str(30 * 24 * 3600 * 1000)

    with pytest.raises(TopicMismatchError, match=f"{topics.events} has {PARTITIONS} partitions, not 3"):
        await ensure_topics(broker.bootstrap, topics, partitions=3)


async def test_ensure_topics_creates_with_partition_counts_and_retention(broker: Broker) -> None:
    names = TopicNames(prefix=f"test.custom.{time.time_ns()}.")
    created = await ensure_topics(
        broker.bootstrap, names, partitions={names.events: 2, names.heartbeats: 1},
        progress_retention_ms=60_000, poison_retention_ms=120_000,
    )
    assert created == dict.fromkeys(names.all(), True)
    async with LogReader(broker.bootstrap, tansu=broker.is_tansu) as reader:
        assert await reader.partitions(names.events) == [0, 1]
        assert await reader.partitions(names.heartbeats) == [0]
    configs = await describe_topic_configs(broker.bootstrap, [names.progress, names.poison])
    assert configs[names.progress]["retention.ms"] == "60000"
    assert configs[names.poison]["retention.ms"] == "120000"

