"""What timestamp Tansu gives a record: the broker fact the as-of time rule rests on (README, broker section).

The fold bounds an event's `occurred_at` by its record's broker timestamp. On Kafka with
`message.timestamp.type=LogAppendTime` that is the broker's clock; with CreateTime (the
default) it is the producing client's. These tests record what Tansu does with both.
"""

from __future__ import annotations

import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from taskfold.broker.harness import Broker

pytestmark = pytest.mark.integration
DAY_MS = 24 * 3600 * 1000


@pytest.fixture(autouse=True)
def _tansu_only(broker: Broker) -> None:
    if not broker.is_tansu:
        pytest.skip("records a Tansu fact; this broker is not Tansu")


async def _round_trip(broker: Broker, configs: dict[str, str], stamp_ms: int | None) -> tuple[int, int]:
    """Create a topic with `configs`, produce one record stamped `stamp_ms`; (timestamp, type) read back."""
    topic = f"test.ts.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=configs)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"v", key=b"k", timestamp_ms=stamp_ms)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        message = await consumer.getone()
    finally:
        await consumer.stop()
    return message.timestamp, message.timestamp_type


async def test_tansu_returns_the_producers_create_time(broker: Broker) -> None:
    ahead = int(time.time() * 1000) + DAY_MS
    timestamp, kind = await _round_trip(broker, {}, ahead)
    assert (timestamp, kind) == (ahead, 0)  # 0 = CreateTime: the client's stamp, kept as sent


async def test_tansu_ignores_log_append_time(broker: Broker) -> None:
    """LogAppendTime would stamp records with the broker's clock; Tansu keeps the client's."""
    ahead = int(time.time() * 1000) + DAY_MS
    timestamp, kind = await _round_trip(broker, {"message.timestamp.type": "LogAppendTime"}, ahead)
    assert (timestamp, kind) == (ahead, 0)
