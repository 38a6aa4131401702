"""The partition of a queue: the Kafka default partitioner, computed without the broker."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from taskfold.agent import partitions_of, queue_partition

# Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2.
JAVA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize(("key", "signed"), JAVA_VECTORS.items())
def test_murmur2_is_the_java_clients(key: str, signed: int) -> None:
    # The Java client's partition is toPositive(murmur2) % n, i.e. the low 31 bits.
    assert murmur2(key.encode()) == signed & 0xFFFFFFFF
    assert queue_partition(key, 1_000_003) == (signed & 0x7FFFFFFF) % 1_000_003


@given(st.text(min_size=1, max_size=60), st.integers(1, 64))
def test_queue_partition_is_where_the_producer_puts_the_key(queue: str, partitions: int) -> None:
    expected = DefaultPartitioner()(queue.encode(), list(range(partitions)), list(range(partitions)))
    assert queue_partition(queue, partitions) == expected


def test_partitions_of_groups_queues_and_rejects_zero_partitions() -> None:
    placed = partitions_of(["emails", "reports", "emails", "ml#0", "ml#1"], 4)
    assert sorted(q for qs in placed.values() for q in qs) == ["emails", "ml#0", "ml#1", "reports"]
    assert all(queue_partition(q, 4) == p for p, qs in placed.items() for q in qs)
    assert list(placed) == sorted(placed)
    with pytest.raises(ValueError, match="at least one partition"):
        queue_partition("emails", 0)
