"""Read raw records from the log: replay to the end, or tail it live.

No consumer group: partitions are assigned directly, so readers never rebalance and any
number of them can read the same partitions. "The end" is always the Fetch high
watermark (taskfold.broker.highwater.end_offsets), never ListOffsets, which is wrong on Tansu (BROKER.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from itertools import takewhile
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnknownTopicOrPartitionError
from aiokafka.structs import ConsumerRecord

from taskfold.broker import clients
from taskfold.broker.highwater import end_offsets as highwater_end_offsets
from taskfold.broker.settings import consumer_settings, set_fetch_max_wait
from taskfold.log.contiguity import Contiguity
from taskfold.log.records import ConsumedRecord

Start = dict[int, int] | int | None


class LogReader:
    """Reads topics partition by partition, in offset order, without a consumer group."""

    def __init__(
        self, bootstrap: str, *, tansu: bool = False, batch: int = 10_000, **consumer_kwargs: Any
    ) -> None:
        self.bootstrap = bootstrap
        self.batch = batch  # max records per getmany; big batches keep throughput up
        self.holes: Counter[str] = Counter()  # fetches that left out an offset: "reread", "accepted"
        # Readers never commit, and an explicit start offset that no longer exists should
        # fail loudly (auto_offset_reset "none"), not silently restart from the beginning.
        self._settings = {
            **consumer_settings(tansu),
            "auto_offset_reset": "none",
            "client_id": f"taskfold-reader-{uuid.uuid4().hex[:8]}",
            **consumer_kwargs,
        }
        self._meta: AIOKafkaConsumer | None = None
        self._live: AIOKafkaConsumer | None = None  # the consumer of the running `batches`, if any
        self._partitions: dict[str, list[int]] = {}  # by topic; ensure_topics refuses a changed count

    async def start(self) -> None:
        """Connect (the connection serves metadata and end offsets)."""
        if self._meta is None:
            meta = self._consumer()
            await meta.start()
            self._meta = meta

    async def stop(self) -> None:
        """Disconnect."""
        meta, self._meta = self._meta, None
        if meta is not None:
            await meta.stop()

    async def __aenter__(self) -> LogReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def set_fetch_wait(self, wait_ms: int) -> None:
        """The Fetch max_wait of the running `batches` from its next Fetch on, and of later ones."""
        self._settings["fetch_max_wait_ms"] = wait_ms
        if self._live is not None:
            set_fetch_max_wait(self._live, wait_ms)

    def _consumer(self) -> AIOKafkaConsumer:
        return clients.consumer(self.bootstrap, **self._settings)

    async def partitions(self, topic: str) -> list[int]:
        """The partition ids of `topic`; raises if it does not exist (it is not auto-created)."""
        meta = self._require_started()
        known = self._partitions.get(topic)
        if known is not None:
            return list(known)
        # Metadata for all topics never auto-creates one, unlike asking for the topic by
        # name (Tansu would create it with 4 partitions). The consumer API only exposes
        # topic names from that request, so read the cluster snapshot it returns. That
        # answer lists every topic of the cluster, so it is asked once per topic, not per call.
        cluster = await meta._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        self._partitions[topic] = sorted(partitions)
        return list(self._partitions[topic])

    async def end_offsets(self, topic: str, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """{partition: next offset to be written}, from the Fetch high watermark."""
        meta = self._require_started()
        ids = list(partitions) if partitions is not None else await self.partitions(topic)
        ends = await highwater_end_offsets(meta, [TopicPartition(topic, p) for p in ids])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def read(
        self,
        topic: str,
        partitions: Iterable[int] | None = None,
        start: Start = None,
        to_end: bool = True,
        live: bool = False,
        contiguous: bool = True,
    ) -> AsyncIterator[ConsumedRecord]:
        """Yield records from `start` (default: the beginning), in offset order per partition.

        `start` is one offset for every partition, or {partition: offset} (missing
        partitions start at the beginning). With `to_end` (the default) the iteration ends
        once every partition has reached the end captured when it began; with `live` it
        never ends and yields new records as they arrive. Use it with
        `contextlib.aclosing` when you may stop early, so the consumer is closed promptly.
        """
        async with aclosing(self.batches(topic, partitions, start, to_end, live, contiguous=contiguous)) as batches:
            async for batch in batches:
                for record in batch:
                    yield record

    async def batches(self, topic: str, partitions: Iterable[int] | None = None, start: Start = None,
                      to_end: bool = True, live: bool = False, idle_ms: int = 500,
                      contiguous: bool = True) -> AsyncIterator[list[ConsumedRecord]]:
        """Like `read`, but yields the records of each fetch together (for batched appliers).

        While live, an empty list is yielded after `idle_ms` without records, so a caller
        can look at the clock; `highwater(topic, partition)` then tells how far the log was.
        With `contiguous` (the default) a fetch that leaves out an offset is read again
        from there (taskfold.log.contiguity); what was read again is counted in `holes`.
        """
        if not (to_end or live):
            raise ValueError("read() needs to_end=True or live=True, or it would never know when to stop")
        every = await self.partitions(topic)
        tps = [TopicPartition(topic, p) for p in (list(partitions) if partitions is not None else every)]
        ends = _Ends(None if live else await highwater_end_offsets(self._require_started(), tps))
        consumer = self._consumer()
        await consumer.start()
        self._live = consumer
        try:
            await _seek(consumer, tps, start)
            holes = await self._contiguity(consumer, topic, tps) if contiguous else None
            await ends.begin(consumer, tps)
            while live or ends.remaining:
                fetched = await consumer.getmany(timeout_ms=idle_ms, max_records=self.batch)
                if holes is not None:
                    fetched = await _repair_holes(consumer, holes, fetched)
                out = [_consumed(m, len(every))
                       for tp, messages in fetched.items() for m in ends.before(tp, messages)]
                if out or live:
                    yield out
                await ends.pause_reached(consumer)
        finally:
            self._live = None
            # aiokafka 0.14.0: stopping a no-group consumer before its coordinator task has
            # run once raises CancelledError from stop(); let the task start first.
            await asyncio.sleep(0)
            await consumer.stop()

    async def _contiguity(self, consumer: AIOKafkaConsumer, topic: str, tps: list[TopicPartition]) -> Contiguity:
        """Hole detection that expects each partition's next record at its position after the seek."""
        holes = Contiguity(topic, counts=self.holes)
        for tp in tps:
            holes.expect(tp.partition, await consumer.position(tp))
        return holes

    def highwater(self, topic: str, partition: int) -> int | None:
        """The partition's end as the last fetch of the running `batches` read reported it."""
        consumer = self._live
        return None if consumer is None else consumer.highwater(TopicPartition(topic, partition))

    def position(self, topic: str, partition: int) -> int | None:
        """The next offset the running `batches` read will yield (None until known).

        It also moves past offsets that hold no record: records removed by retention or
        compaction, transaction markers. So it, not the last record seen, tells how far a
        read has come.
        """
        consumer = self._live
        if consumer is None:
            return None
        try:  # aiokafka's public position() awaits a reset; this only looks
            state = consumer._subscription.subscription.assignment.state_value(TopicPartition(topic, partition))
        except AttributeError:  # not assigned (yet)
            return None
        return state.position if state is not None and state.has_valid_position else None

    def _require_started(self) -> AIOKafkaConsumer:
        if self._meta is None:
            raise RuntimeError("LogReader is not started")
        return self._meta


async def _seek(consumer: AIOKafkaConsumer, tps: list[TopicPartition], start: Start) -> None:
    """Assign the partitions and seek each to its start offset, or to its beginning without one."""
    consumer.assign(tps)
    from_beginning = []
    for tp in tps:
        offset = start.get(tp.partition) if isinstance(start, dict) else start
        if offset is None:
            from_beginning.append(tp)
        else:
            consumer.seek(tp, offset)
    if from_beginning:
        await consumer.seek_to_beginning(*from_beginning)


Fetched = dict[TopicPartition, list[ConsumerRecord]]


async def _repair_holes(consumer: AIOKafkaConsumer, holes: Contiguity, fetched: Fetched) -> Fetched:
    """The fetched records up to the first hole of each partition, which is sought back to be read again."""
    admitted: Fetched = {}
    for tp, messages in fetched.items():
        admitted[tp], again = holes.admit(tp.partition, messages)
        if again is not None:
            consumer.seek(tp, again)
    for tp in fetched:  # a hole after the last record fetched: the position ran past it
        again = holes.behind(tp.partition, await consumer.position(tp))
        if again is not None:
            consumer.seek(tp, again)
    return admitted


class _Ends:
    """The ends a read to the end captured when it began (None while live), and the partitions short of them."""

    def __init__(self, ends: dict[TopicPartition, int] | None) -> None:
        self.ends = ends
        self.remaining: set[TopicPartition] = set()

    async def begin(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """Note the partitions short of their end; pause the others, which have nothing to read."""
        self.remaining = set(tps)
        if self.ends is not None:
            self.remaining = {tp for tp in tps if await consumer.position(tp) < self.ends[tp]}
            consumer.pause(*(set(tps) - self.remaining))

    def before(self, tp: TopicPartition, messages: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """The messages before the partition's end: those appended after the read began are left out."""
        if self.ends is None:
            return messages
        end = self.ends[tp]
        return list(takewhile(lambda m: m.offset < end, messages))

    async def pause_reached(self, consumer: AIOKafkaConsumer) -> None:
        """Pause the partitions that reached their end, and stop counting them as remaining."""
        if self.ends is None:
            return
        # Position, not the last offset seen: it also moves past offsets that hold no
        # record (compaction, transaction markers).
        done = {tp for tp in self.remaining if await consumer.position(tp) >= self.ends[tp]}
        if done:
            consumer.pause(*done)
            self.remaining -= done


def _consumed(message: ConsumerRecord, partitions: int) -> ConsumedRecord:
    """An aiokafka message as a ConsumedRecord of a topic with `partitions` partitions."""
    return ConsumedRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=message.timestamp,
        key=message.key.decode("utf-8") if message.key is not None else None,
        value=message.value,
        headers=tuple(message.headers),
        partitions=partitions,
    )
