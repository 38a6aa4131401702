"""Existing topics are checked at start, and partition counts are not fetched per call (issue 13 item 6)."""

from __future__ import annotations

import uuid

import pytest

from taskfold.broker import clients
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicMismatchError, TopicNames, describe_topic_configs, ensure_topics
from taskfold.log.reader import LogReader
from aiokafka.admin import NewTopic


def fresh() -> TopicNames:
    return TopicNames(prefix=f"test.{uuid.uuid4().hex[:12]}.")


async def create(broker: Broker, topic: str, configs: dict[str, str], partitions: int = 2) -> None:
    """A topic made by someone else, before taskfold first starts."""
    admin = clients.admin(broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def test_a_reader_asks_for_partition_counts_once_per_topic(broker: Broker, topics: TopicNames) -> None:
    async with LogReader(broker.bootstrap, tansu=broker.is_tansu) as reader:
        client = reader._meta._client
        calls = []
        fetch_all = client.fetch_all_metadata

        async def counted():  # noqa: ANN202
            calls.append(1)
            return await fetch_all()

        client.fetch_all_metadata = counted
        for _ in range(3):
            assert await reader.partitions(topics.events) == [0, 1, 2, 3]
        assert len(calls) == 1  # before: one metadata answer listing the whole cluster per call


async def test_an_existing_events_topic_with_a_retention_is_refused_unless_allowed(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = fresh()
    await create(broker, names.events, {"cleanup.policy": "delete", "retention.ms": "604800000"})
    with pytest.raises(TopicMismatchError, match=rf"{names.events}: retention.ms expected -1, actual 604800000"):
        await ensure_topics(broker.bootstrap, names, partitions=2)
    monkeypatch.setenv("TASKFOLD_EVENTS_RETENTION_ALLOWED", "true")
    assert (await ensure_topics(broker.bootstrap, names, partitions=2))[names.events] is False


async def test_an_existing_compacted_events_topic_is_refused(broker: Broker) -> None:
    names = fresh()
    await create(broker, names.events, {"cleanup.policy": "compact"})
    with pytest.raises(TopicMismatchError, match=rf"{names.events}: cleanup.policy expected delete, actual compact"):
        await ensure_topics(broker.bootstrap, names, partitions=2)


async def test_heartbeats_are_compacted_in_short_segments(broker: Broker, topics: TopicNames) -> None:
    configs = (await describe_topic_configs(broker.bootstrap, [topics.heartbeats]))[topics.heartbeats]
    assert configs["cleanup.policy"] == "compact"
    assert configs["segment.ms"] == "3600000" and configs["min.cleanable.dirty.ratio"] == "0.1"
    assert configs["max.message.bytes"] == "1048588"


async def test_topics_get_the_configured_replication_and_min_insync(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 item 2: production's 3 replicas and 2 in sync reach CreateTopics (Tansu keeps one copy)."""
    monkeypatch.setenv("TASKFOLD_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("TASKFOLD_MIN_INSYNC_REPLICAS", "2")
    names = fresh()
    sent = []
    original = clients.admin

    def spying_admin(bootstrap: str, **kwargs):  # noqa: ANN202
        admin = original(bootstrap, **kwargs)
        create = admin.create_topics

        async def create_topics(new_topics, *args, **kw):  # noqa: ANN001, ANN202
            sent.extend(new_topics)
            return await create(new_topics, *args, **kw)

        admin.create_topics = create_topics
        return admin

    monkeypatch.setattr(clients, "admin", spying_admin)
    await ensure_topics(broker.bootstrap, names, partitions=2)
    assert {t.name: t.replication_factor for t in sent} == dict.fromkeys(names.all(), 3)
    configs = await describe_topic_configs(broker.bootstrap, names.all())
    assert {configs[t]["min.insync.replicas"] for t in names.all()} == {"2"}
