"""Where a record sits in the log, and the two rules the fold judges by it.

A reader hands the fold a `Where` (the record's partition, the topic's partition count
and the record's broker timestamp). With it, `evolve` rejects, before looking at any
state, an event that:

* is misrouted: it sits in a partition other than its queue's home partition. Its
  verdict would otherwise depend on how a reader interleaves partitions (ARCHITECTURE §1);
* is stamped ahead: its `occurred_at` is more than `SKEW_BOUND_MS` after its record's
  broker timestamp. One wrong clock must not move the time of a position a day ahead.

The time of a position, which every as-of cut judges by, is the running maximum of
`stamp(event, where)` over its partition: small backwards steps between writers are
absorbed, and an event rejected for skew has no stamp, so it cannot truncate history.

Pure: the home partition is the Kafka default partitioner's (murmur2 of the key bytes,
made non-negative, modulo the count), computed here so the core needs no Kafka client.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

# The same for every reader, so not a setting: a reader with another bound would judge
# the same record differently.
SKEW_BOUND_MS = 5 * 60 * 1000

# How the two rejections' reasons begin, so audits can name them without parsing.
MISROUTED = "misrouted: "
SKEWED = "clock skew: "

_MASK = 0xFFFFFFFF
_M = 0x5BD1E995


@dataclass(frozen=True, slots=True)
class Where:
    """A record's place in the events topic, as the reader saw it."""

    partition: int
    partitions: int  # the topic's partition count
    timestamp: int | None = None  # the record's broker timestamp (ms); None or negative: unknown


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) of `data`, unsigned 32-bit."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length % 4
    base = length - tail
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=65536)
def home_partition(queue: str, partitions: int) -> int:
    """The partition of `partitions` that events keyed by `queue` land in."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    return (murmur2(queue.encode("utf-8")) & 0x7FFFFFFF) % partitions


def misrouted(queue: str, where: Where) -> str | None:
    """Why an event of `queue` does not belong at `where`, or None if it does."""
    home = home_partition(queue, where.partitions)
    if where.partition == home:
        return None
    return f"{MISROUTED}queue {queue} lives in partition {home}, not {where.partition}"


def ahead(occurred_at: int, where: Where) -> str | None:
    """Why `occurred_at` is too far ahead of the record's broker timestamp, or None if it is not."""
    broker = where.timestamp
    if broker is None or broker < 0 or occurred_at - broker <= SKEW_BOUND_MS:
        return None
    return (f"{SKEWED}occurred_at {occurred_at} is {occurred_at - broker} ms ahead of "
            f"the record's broker timestamp {broker} (bound {SKEW_BOUND_MS} ms)")


def misplaced(queue: str, occurred_at: int, where: Where) -> str | None:
    """The reason the fold rejects an event at `where` whatever the state, or None."""
    return misrouted(queue, where) or ahead(occurred_at, where)


def stamp(occurred_at: int, where: Where | None) -> int | None:
    """The time an event gives its position (None: it does not move the partition's clock)."""
    if where is not None and ahead(occurred_at, where) is not None:
        return None
    return occurred_at
