"""Which `events` partitions an agent reads: the ones its queues hash to.

Events are keyed by queue (ARCHITECTURE §2), and producers place a key with the Kafka
default partitioner: murmur2 of the key bytes, made non-negative, modulo the partition
count. The Java client and aiokafka agree on it, so computing it finds a queue's
partition without asking the broker. The fold uses the same function
(`taskfold.core.fold.placement.home_partition`) to reject misrouted events.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskfold.core.fold.placement import home_partition


def queue_partition(queue: str, partitions: int) -> int:
    """The partition of `partitions` that events keyed by `queue` land in."""
    return home_partition(queue, partitions)


def partitions_of(queues: Iterable[str], partitions: int) -> dict[int, list[str]]:
    """{partition: the queues on it, sorted} for the given queues."""
    placed: dict[int, list[str]] = {}
    for queue in sorted(set(queues)):
        placed.setdefault(queue_partition(queue, partitions), []).append(queue)
    return dict(sorted(placed.items()))
