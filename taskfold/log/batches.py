"""Where a partition's record batches begin and end, read back from the broker.

A Tansu Fetch lists every batch ever written to the partition (BROKER.md), so batches,
not records, are what each reader of a busy partition pays for. Consumers hide batch
boundaries, so this reads them with raw Fetch requests and the record-batch headers.
Used by the benchmarks (`bench/batches.py`) and by the tests that check a writer's
batching; it is a measuring tool, not a reader for processors.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka import errors as Errors
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from taskfold.broker import clients, highwater

FETCH_BYTES = 4 << 20
FETCH_WAIT_MS = 200  # never 0 (Tansu then answers with no partitions); a short wait can run out before a
# Fetch of a partition with thousands of batches has listed them, and return nothing


@dataclass(frozen=True, slots=True)
class Batch:
    """One record batch: its first offset, the offset after it, and each record's `type` header, in order."""

    base_offset: int
    next_offset: int
    types: tuple[str, ...]

    @property
    def size(self) -> int:
        """Records in the batch."""
        return len(self.types)


async def read_batches(bootstrap: str, topic: str, partition: int, *, start: int = 0,
                       end: int | None = None, timeout_s: float = 30.0) -> list[Batch]:
    """The batches of one partition holding offsets [start, end) (default: to the high watermark)."""
    consumer = clients.consumer(bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        if end is None:
            end = (await highwater.end_offsets(consumer, [tp], timeout=timeout_s))[tp]
        out: list[Batch] = []
        offset, deadline = start, time.monotonic() + timeout_s
        while offset < end:
            if time.monotonic() > deadline:
                raise Errors.KafkaTimeoutError(f"{topic}[{partition}]: batches read up to {offset}, not {end}, "
                                               f"within {timeout_s} s")
            fetched = [b for b in await _fetch(consumer, tp, offset) if b.next_offset > offset and b.base_offset < end]
            if not fetched:
                await asyncio.sleep(0.01)  # nothing found this time (a Fetch racing a produce): ask again
            for batch in fetched:
                out.append(batch)
                offset = batch.next_offset
        return out
    finally:
        await consumer.stop()


async def _fetch(consumer, tp: TopicPartition, offset: int) -> list[Batch]:  # noqa: ANN001 (aiokafka's consumer)
    """The whole batches one Fetch from `offset` returns (the broker may start one before it)."""
    client = consumer._client  # no public API sends a raw Fetch or shows batch boundaries
    node = client.cluster.leader_for_partition(tp)
    if node is None or node == -1:
        await client.force_metadata_update()
        return []
    request = FetchRequest(FETCH_WAIT_MS, 0, FETCH_BYTES, 0, [(tp.topic, [(tp.partition, offset, FETCH_BYTES)])])
    response = await client.send(node, request)
    batches: list[Batch] = []
    for _topic, parts in response.topics:
        for part in parts:
            error = Errors.for_code(part[1])
            if error is not Errors.NoError:
                raise error(f"Fetch of {tp} from offset {offset}")
            records = MemoryRecords(bytes(part[-1] or b""))
            while (batch := records.next_batch()) is not None:
                types = tuple(dict(r.headers).get("type", b"").decode() for r in batch)
                batches.append(Batch(batch.base_offset, batch.next_offset, types))
    return batches


def summary(batches: list[Batch]) -> dict[str, float]:
    """Records, batches, records per batch, and the share of batches holding a single record."""
    records = sum(b.size for b in batches)
    singles = sum(1 for b in batches if b.size == 1)
    return {"records": records, "batches": len(batches),
            "records_per_batch": round(records / len(batches), 2) if batches else 0.0,
            "single_record_batches": singles}


def by_type(batches: list[Batch]) -> dict[str, float]:
    """Per event type: records per batch among the batches that hold that type."""
    records: Counter[str] = Counter()
    holding: Counter[str] = Counter()
    for batch in batches:
        counts = Counter(batch.types)
        records.update(counts)
        holding.update(counts.keys())
    return {t: round(records[t] / holding[t], 2) for t in sorted(records)}
