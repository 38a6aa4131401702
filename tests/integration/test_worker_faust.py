"""The faust-streaming bug `streams.patches` fixes, shown at its root in aiokafka (any broker)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import patches
from taskfold.broker import settings
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.log import LogWriter, RawRecord

pytestmark = pytest.mark.integration


async def test_a_partition_without_a_commit_is_not_sought_back(broker: Broker, topics: TopicNames) -> None:
    """Records fetched while faust recovers tables are lost unless the seek goes to the beginning."""
    async with LogWriter(broker.bootstrap, tansu=broker.is_tansu) as writer:
        await writer.append(topics.events, [RawRecord("q", b"event", partition=0)] * 5)
    tp = TopicPartition(topics.events, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=f"g-{uuid.uuid4().hex}",
                                **{k: v for k, v in settings.consumer_settings(broker).items() if k != "group_id"})
    await consumer.start()
    try:
        consumer.assign([tp])
        for _ in range(20):  # what the fetcher hands over during recovery: consumed, then dropped
            await consumer.getmany(tp, timeout_ms=500)
            if await consumer.position(tp) == 5:
                break
        assert await consumer.position(tp) == 5
        committed = await consumer.seek_to_committed()  # what faust's perform_seek calls
        assert committed[tp] is None
        assert await consumer.position(tp) == 5, "aiokafka now seeks uncommitted partitions: drop streams.patches"
        await patches.seek_to_committed_or_beginning(consumer)
        assert await consumer.position(tp) == 0
    finally:
        await consumer.stop()
