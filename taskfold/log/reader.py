"""Read raw records from the log: replay to the end, or tail it live.

No consumer group: partitions are assigned directly, so readers never rebalance and any
number of them can read the same partitions. "The end" is always the Fetch high
watermark (taskfold.broker.highwater), never ListOffsets, which is wrong on Tansu (BROKER.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnknownTopicOrPartitionError

from taskfold.broker import clients, highwater
from taskfold.broker.settings import consumer_settings
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
        ends = await highwater.end_offsets(meta, [TopicPartition(topic, p) for p in ids])
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

    async def batches(
        self,
        topic: str,
        partitions: Iterable[int] | None = None,
        start: Start = None,
        to_end: bool = True,
        live: bool = False,
        idle_ms: int = 500,
        contiguous: bool = True,
    ) -> AsyncIterator[list[ConsumedRecord]]:
        """Like `read`, but yields the records of each fetch together (for batched appliers).

        While live, an empty list is yielded after `idle_ms` without records, so a caller
        can look at the clock; `highwater(topic, partition)` then tells how far the log was.
        With `contiguous` (the default) a fetch that leaves out an offset is read again
        from there (taskfold.log.contiguity); what was read again is counted in `holes`.
        """
        if not (to_end or live):
            raise ValueError("read() needs to_end=True or live=True, or it would never know when to stop")
        every = await self.partitions(topic)
        ids = list(partitions) if partitions is not None else every
        tps = [TopicPartition(topic, p) for p in ids]
        ends = None if live else await highwater.end_offsets(self._require_started(), tps)

        consumer = self._consumer()
        await consumer.start()
        self._live = consumer
        try:
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

            holes = Contiguity(topic, counts=self.holes) if contiguous else None
            if holes is not None:
                for tp in tps:
                    holes.expect(tp.partition, await consumer.position(tp))
            remaining = set(tps)
            if ends is not None:
                remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
                consumer.pause(*(set(tps) - remaining))
            while live or remaining:
                fetched = await consumer.getmany(timeout_ms=idle_ms, max_records=self.batch)
                out: list[ConsumedRecord] = []
                for tp, messages in fetched.items():
                    end = ends[tp] if ends is not None else None
                    if holes is not None:
                        messages, again = holes.admit(tp.partition, messages)
                        if again is not None:
                            consumer.seek(tp, again)
                    for m in messages:
                        if end is not None and m.offset >= end:
                            break  # appended after the read began
                        out.append(ConsumedRecord(
                            topic=m.topic,
                            partition=m.partition,
                            offset=m.offset,
                            timestamp=m.timestamp,
                            key=m.key.decode("utf-8") if m.key is not None else None,
                            value=m.value,
                            headers=tuple(m.headers),
                            partitions=len(every),
                        ))
                if holes is not None:
                    for tp in fetched:  # a hole after the last record fetched: the position ran past it
                        again = holes.behind(tp.partition, await consumer.position(tp))
                        if again is not None:
                            consumer.seek(tp, again)
                if out or live:
                    yield out
                if ends is not None:
                    done = set()
                    for tp in remaining:
                        # Position, not the last offset seen: it also moves past offsets
                        # that hold no record (compaction, transaction markers).
                        if await consumer.position(tp) >= ends[tp]:
                            done.add(tp)
                    if done:
                        consumer.pause(*done)
                        remaining -= done
        finally:
            self._live = None
            # aiokafka 0.14.0: stopping a no-group consumer before its coordinator task has
            # run once raises CancelledError from stop(); let the task start first.
            await asyncio.sleep(0)
            await consumer.stop()

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
