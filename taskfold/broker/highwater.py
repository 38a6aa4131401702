"""The end of a partition, from the Fetch high watermark: right on every broker (BROKER.md).

Deviation: Tansu answers ListOffsets(LATEST), and so aiokafka's `end_offsets` and
`seek_to_end`, with the first offset of the last stored batch + 1. After multi-record
batches that is short of the end, which breaks "caught up" checks and faust recovery.
The high watermark in a Fetch response is right on every broker, so `end_offsets` takes
the end from there on every broker, and its callers carry no Tansu switch.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from aiokafka import errors as Errors
from aiokafka.protocol.fetch import FetchRequest

_END_FETCH_MAX_WAIT_MS = 1  # Tansu answers a Fetch with max_wait 0 with no partitions at all


@dataclass
class _Round:
    """What one round of high-watermark Fetches found out."""

    ends: dict[TopicPartition, int] = field(default_factory=dict)
    out_of_range: list[TopicPartition] = field(default_factory=list)  # retention moved the start past the hint
    stale_metadata: bool = False  # a leader unknown or moved: refresh before asking again


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], *, timeout: float = 30.0
) -> dict[TopicPartition, int]:
    """The end (next offset to be written) of each partition, from the Fetch high watermark.

    How: ListOffsets(LATEST) gives a valid offset at or before the end (the end itself on
    Kafka); one Fetch from it per leader, with a 1-byte size limit, returns the high
    watermark (no records on Kafka, one batch on Tansu). Partitions still without one are
    asked again, after a metadata refresh where a leader was unknown, until `timeout`.
    Uses the consumer's connection (the private `_client`); partitions need not be
    assigned, positions are untouched.
    """
    partitions = list(dict.fromkeys(partitions))
    if not partitions:
        return {}
    client = consumer._client  # no public API sends a raw Fetch
    deadline = time.monotonic() + timeout
    hints: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    ends: dict[TopicPartition, int] = {}
    while pending := [tp for tp in partitions if tp not in ends]:
        if time.monotonic() > deadline:
            raise Errors.KafkaTimeoutError(f"no Fetch high watermark for {pending} in {timeout} s")
        found = await _fetch_round(client, pending, hints)
        ends.update(found.ends)
        await _before_next_round(consumer, found, hints, missing=any(tp not in ends for tp in pending))
    return ends


async def _fetch_round(client: AIOKafkaClient, pending: list[TopicPartition],
                       hints: dict[TopicPartition, int]) -> _Round:
    """Send one Fetch per leader and read the high watermarks out of the answers."""
    found = _Round()
    requests = _requests_by_leader(client, pending, hints, found)
    responses = await asyncio.gather(*(client.send(node, request) for node, request in requests.items()),
                                     return_exceptions=True)
    for response in responses:
        if isinstance(response, Errors.KafkaError) and response.retriable:
            found.stale_metadata = True
        elif isinstance(response, BaseException):
            raise response
        else:
            _read_response(response, found)
    return found


def _requests_by_leader(client: AIOKafkaClient, pending: list[TopicPartition], hints: dict[TopicPartition, int],
                        found: _Round) -> dict[int, FetchRequest]:
    """A 1-byte Fetch per leader from each partition's hint; a partition with no known leader marks metadata stale."""
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(lambda: defaultdict(list))
    for tp in pending:
        node = client.cluster.leader_for_partition(tp)
        if node is None or node == -1:
            client.add_topic(tp.topic)
            found.stale_metadata = True
            continue
        by_node[node][tp.topic].append((tp.partition, hints[tp], 1))
    return {node: FetchRequest(_END_FETCH_MAX_WAIT_MS, 0, 1, 0, list(topics.items()))
            for node, topics in by_node.items()}


def _read_response(response: Any, found: _Round) -> None:
    """Note each partition's high watermark, or why the Fetch gave none."""
    for topic, parts in response.topics:
        for partition, error_code, highwater, *_ in parts:
            tp = TopicPartition(topic, partition)
            error = Errors.for_code(error_code)
            if error is Errors.NoError:
                found.ends[tp] = highwater
            elif error is Errors.OffsetOutOfRangeError:
                found.out_of_range.append(tp)
            elif error.retriable or error.invalid_metadata:
                found.stale_metadata = True
            else:
                raise error(f"Fetch for the high watermark of {tp}")


async def _before_next_round(consumer: AIOKafkaConsumer, found: _Round, hints: dict[TopicPartition, int], *,
                             missing: bool) -> None:
    """Move the hints that retention passed, refresh stale metadata, or give a left-out partition a moment."""
    if found.out_of_range:
        hints.update(await consumer.beginning_offsets(found.out_of_range))
    if found.stale_metadata:
        await consumer._client.force_metadata_update()
    elif not found.out_of_range and missing:
        await asyncio.sleep(0.01)  # a partition left out of the response: ask again
