"""Topic names, their idempotent creation, and which partition a queue's events go to (ARCHITECTURE §2).

Every topic is created up front: a broker that auto-creates topics would pick the
partition count itself (Tansu always picks 4).

Events are keyed by queue, and producers place a key with the Kafka default partitioner:
murmur2 of the key bytes, made non-negative, modulo the partition count. The Java client
and aiokafka agree on it, so `queue_partition` finds a queue's partition without asking
the broker. The fold uses the same function (`taskfold.core.fold.placement.home_partition`)
to reject misrouted events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import for_code, NoError, TopicAlreadyExistsError

from taskfold.broker import clients
from taskfold.config import ClusterSettings
from taskfold.core.fold.placement import home_partition

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
DEFAULT_PARTITIONS = 6
# Kafka's default message.max.bytes, set on each topic so that a cluster with a lower
# default still takes our 1,000,000-byte batches (settings.MAX_BATCH_BYTES).
MAX_MESSAGE_BYTES = 1_048_588
# Compaction of `heartbeats` only runs on closed segments: roll them hourly and clean at
# 10 % dirty, so a reader replays about an hour of heartbeats, not a week's segment.
HEARTBEAT_SEGMENT_MS = 3_600_000
HEARTBEAT_DIRTY_RATIO = "0.1"


def queue_partition(queue: str, partitions: int) -> int:
    """The partition of `partitions` that events keyed by `queue` land in."""
    return home_partition(queue, partitions)


def partitions_of(queues: Iterable[str], partitions: int) -> dict[int, list[str]]:
    """{partition: the queues on it, sorted} for the given queues."""
    placed: dict[int, list[str]] = {}
    for queue in sorted(set(queues)):
        placed.setdefault(queue_partition(queue, partitions), []).append(queue)
    return dict(sorted(placed.items()))


class TopicMismatchError(RuntimeError):
    """An existing topic differs from what we asked for in a way that would lose or misplace events."""


@dataclass(frozen=True)
class TopicNames:
    """The names of taskfold's topics, all under one prefix."""

    prefix: str = "taskfold."

    @property
    def events(self) -> str:
        """Every task and agent-membership event, keyed by queue; kept forever."""
        return f"{self.prefix}events"

    @property
    def heartbeats(self) -> str:
        """Agent liveness and load samples, keyed by agent; compacted."""
        return f"{self.prefix}heartbeats"

    @property
    def progress(self) -> str:
        """Streamed output of running attempts, keyed by queue."""
        return f"{self.prefix}progress"

    @property
    def poison(self) -> str:
        """Bytes that could not be decoded, with the reason attached."""
        return f"{self.prefix}poison"

    def all(self) -> list[str]:
        """All four names."""
        return [self.events, self.heartbeats, self.progress, self.poison]

    def compacted(self, topic: str) -> bool:
        """True when compaction may remove records of `topic`, so a reader's offset holes can be real."""
        return topic_configs(self).get(topic, {}).get("cleanup.policy") == "compact"


def topic_configs(
    names: TopicNames, *, progress_retention_ms: int = 7 * DAY_MS, poison_retention_ms: int = 30 * DAY_MS,
    min_insync_replicas: int = 1,
) -> dict[str, dict[str, str]]:
    """The topic-level configs of each topic."""
    every = {"min.insync.replicas": str(min_insync_replicas), "max.message.bytes": str(MAX_MESSAGE_BYTES)}
    return {
        names.events: {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1", **every},
        names.heartbeats: {"cleanup.policy": "compact", "segment.ms": str(HEARTBEAT_SEGMENT_MS),
                           "min.cleanable.dirty.ratio": HEARTBEAT_DIRTY_RATIO, **every},
        names.progress: {"cleanup.policy": "delete", "retention.ms": str(progress_retention_ms), **every},
        names.poison: {"cleanup.policy": "delete", "retention.ms": str(poison_retention_ms), **every},
    }


async def ensure_topics(
    bootstrap: str,
    names: TopicNames = TopicNames(),
    partitions: int | Mapping[str, int] = DEFAULT_PARTITIONS,
    *,
    replication_factor: int | None = None,
    progress_retention_ms: int = 7 * DAY_MS,
    poison_retention_ms: int = 30 * DAY_MS,
) -> dict[str, bool]:
    """Create the topics if missing; return {topic: created now}. Safe to call repeatedly.

    `partitions` is one count for all, or a count per topic name. A topic that already
    exists is never changed; its layout and configs are checked (taskfold.broker.
    topiccheck): a different partition count (keys would hash elsewhere), a compacted
    `events` or one with a retention (unless TASKFOLD_EVENTS_RETENTION_ALLOWED) raise
    TopicMismatchError; other differences are logged.
    Replication factor and min.insync.replicas come from ClusterSettings unless given.
    """
    cluster = ClusterSettings()
    replication_factor = replication_factor or cluster.replication_factor
    configs = topic_configs(
        names, progress_retention_ms=progress_retention_ms, poison_retention_ms=poison_retention_ms,
        min_insync_replicas=cluster.min_insync_replicas,
    )
    wanted = {
        topic: partitions if isinstance(partitions, int) else partitions.get(topic, DEFAULT_PARTITIONS)
        for topic in configs
    }
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(t, wanted[t], replication_factor, topic_configs=configs[t]) for t in configs]
        )
        created: dict[str, bool] = {}
        for topic, error_code, *rest in response.topic_errors:
            error = for_code(error_code)
            if error is NoError:
                created[topic] = True
            elif error is TopicAlreadyExistsError:
                created[topic] = False
            else:
                message = rest[0] if rest else None
                raise error(f"creating topic {topic}: {message or error.__name__}")
        existing = [t for t, new in created.items() if not new]
        if existing:
            await _check_existing(bootstrap, names, wanted, replication_factor, configs, existing)
        return created
    finally:
        await admin.close()


async def _check_existing(bootstrap: str, names: TopicNames, wanted: Mapping[str, int], replication_factor: int,
                          configs: Mapping[str, Mapping[str, str]], existing: list[str]) -> None:
    """Refuse an existing topic that would lose or misplace events; log any other difference."""
    from taskfold.broker.topiccheck import TopicSpec, check  # it imports this module

    specs = [TopicSpec(t, wanted[t], replication_factor, configs[t]) for t in existing]
    mismatches = await check(bootstrap, specs, names)
    refused = [m for m in mismatches if m.refused]
    for m in mismatches:
        if not m.refused:
            log.warning("existing topic differs from taskfold's layout (left as it is): %s", m)
    if refused:
        reasons = [f"{m.topic} has {m.actual} partitions, not {m.expected}" if m.setting == "partitions" else str(m)
                   for m in refused]
        raise TopicMismatchError(
            "existing topics differ from the requested layout: " + "; ".join(reasons)
            + ". A different partition count makes queue keys hash to other partitions; compaction or "
            "retention on events deletes the system of record. Recreate the topics, ask for the existing "
            "partition count, or (retention) set TASKFOLD_EVENTS_RETENTION_ALLOWED=true; "
            "`taskfold topics check` lists every difference.")


async def describe_topic_configs(bootstrap: str, topics: list[str]) -> dict[str, dict[str, str]]:
    """The topic-level configs the broker reports, {topic: {name: value}}."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
    finally:
        await admin.close()
    result: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, error_message, _type, name, entries in response.resources:
            error = for_code(error_code)
            if error is not NoError:
                raise error(f"describing configs of {name}: {error_message}")
            result[name] = {entry[0]: entry[1] for entry in entries}
    return result
