"""Client settings, and the fixes for Tansu's deviations from Kafka (BROKER.md).

This is the one module that knows about broker differences. Every fix names the deviation
it exists for, is applied only when the broker is Tansu, and has a test in
`tests/integration/test_tansu_deviations.py` that shows the deviation, so the fix can go
once the broker is fixed.

Code written against Kafka semantics needs no fix at all, which is why it is preferred:
`end_offsets` below reads the high watermark of a Fetch response, which is correct on
every broker, so callers use it unconditionally and carry no Tansu switch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as Errors
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.group import LeaveGroupRequest

from taskfold.broker import clients

log = logging.getLogger(__name__)


class BrokerLike(Protocol):
    is_tansu: bool


def is_tansu(broker: BrokerLike | bool) -> bool:
    """True if `broker` (a harness.Broker, or a plain bool) is Tansu."""
    return broker if isinstance(broker, bool) else bool(broker.is_tansu)


# --- (a) consumer group timeouts -----------------------------------------------------


@dataclass(frozen=True)
class GroupTimeouts:
    """Consumer group timeouts in milliseconds."""

    session_timeout_ms: int
    heartbeat_interval_ms: int
    rebalance_timeout_ms: int

    def kwargs(self) -> dict[str, int]:
        """As aiokafka consumer keyword arguments."""
        return {
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "rebalance_timeout_ms": self.rebalance_timeout_ms,
        }


TANSU_GROUP_TIMEOUTS = GroupTimeouts(6000, 1000, 6000)
TANSU_GROUP_TIMEOUTS_FAST = GroupTimeouts(2000, 500, 2000)
TANSU_REQUEST_TIMEOUT_MS = 30_000


def request_timeout_ms(broker: BrokerLike | bool) -> int:
    """30 s on Tansu; on Kafka above the session and the rebalance timeout (clients.kafka_request_timeout_ms)."""
    return TANSU_REQUEST_TIMEOUT_MS if is_tansu(broker) else clients.kafka_request_timeout_ms()


def group_timeouts(broker: BrokerLike | bool, *, fast: bool = False) -> dict[str, int]:
    """Deviation: Tansu holds every JoinGroup for about session_timeout/2.

    With the client defaults (faust: 60 s session) a join then takes 30 s. On Tansu we use
    a 6 s session (3 s joins), or 2 s in tests (1 s joins); session/2 stays well below the
    request timeout, or the held JoinGroup would time out. On Kafka, `clients.kafka_group_timeouts`:
    faust's 60 s default would both stall a crashed worker's queues for a minute and exceed
    the request timeout (faust then refuses to build the consumer).
    """
    if not is_tansu(broker):
        return clients.kafka_group_timeouts()
    return (TANSU_GROUP_TIMEOUTS_FAST if fast else TANSU_GROUP_TIMEOUTS).kwargs()


# --- (b) LeaveGroup at generation 0 ---------------------------------------------------

_ORIGINAL_MAYBE_LEAVE_GROUP = GroupCoordinator._maybe_leave_group


async def _maybe_leave_group_also_at_generation_0(self: GroupCoordinator) -> None:
    # Same minimal-effort LeaveGroup as aiokafka's, for the one case it skips: a member
    # that joined and got generation 0, which only Tansu hands out (Kafka starts at 1;
    # aiokafka's "not joined" value is -1). Static members (group_instance_id) must not
    # leave, exactly as in aiokafka.
    if self.generation == 0 and self.member_id and self._group_instance_id is None:
        try:
            await self._send_req(LeaveGroupRequest(self.group_id, self.member_id))
        except Errors.KafkaError as err:
            log.warning("LeaveGroup at generation 0 failed: %s", err)
        else:
            log.info("LeaveGroup at generation 0 succeeded (Tansu fix)")
        self.reset_generation()  # the original below now only resets again
    await _ORIGINAL_MAYBE_LEAVE_GROUP(self)


_maybe_leave_group_also_at_generation_0.taskfold_fix = True  # type: ignore[attr-defined]


def install_leave_group_fix() -> None:
    """Deviation: a new Tansu group starts at generation 0, and aiokafka skips LeaveGroup there.

    aiokafka 0.14.0, `aiokafka/consumer/group_coordinator.py`,
    `GroupCoordinator._maybe_leave_group` sends LeaveGroup only `if self.generation > 0`.
    Every first-generation member on Tansu therefore stops without leaving, and the next
    member of the group waits until the stale one's session expires (7-18 s measured with
    6 s sessions, 4 s with 2 s sessions). This replaces that method on the class (so it
    also covers consumers that faust creates) with one that also leaves at generation 0,
    then defers to the original. Idempotent. Harmless on Kafka, which never hands out
    generation 0, but `apply_fixes` installs it only for Tansu all the same.
    Alternative without a patch: static membership (`group_instance_id`), a constant 6 s.
    """
    if not getattr(GroupCoordinator._maybe_leave_group, "taskfold_fix", False):
        GroupCoordinator._maybe_leave_group = _maybe_leave_group_also_at_generation_0


def uninstall_leave_group_fix() -> None:
    """Restore aiokafka's own `_maybe_leave_group` (for tests that show the deviation)."""
    GroupCoordinator._maybe_leave_group = _ORIGINAL_MAYBE_LEAVE_GROUP


def leave_group_fix_installed() -> bool:
    """True if install_leave_group_fix() is in effect."""
    return bool(getattr(GroupCoordinator._maybe_leave_group, "taskfold_fix", False))


def apply_fixes(broker: BrokerLike | bool) -> None:
    """Install the process-wide client fixes, only if the broker is Tansu."""
    if is_tansu(broker):
        install_leave_group_fix()


# --- (c) the end of a partition -------------------------------------------------------

_END_FETCH_MAX_WAIT_MS = 1  # Tansu answers a Fetch with max_wait 0 with no partitions at all


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], *, timeout: float = 30.0
) -> dict[TopicPartition, int]:
    """The end (next offset to be written) of each partition, from the Fetch high watermark.

    Deviation: Tansu answers ListOffsets(LATEST), and so aiokafka's `end_offsets` and
    `seek_to_end`, with the first offset of the last stored batch + 1. After multi-record
    batches that is short of the end, which breaks "caught up" checks and faust recovery.
    The high watermark in a Fetch response is right on every broker, so this function
    takes the end from there, on every broker (no Tansu switch needed).

    How: ListOffsets(LATEST) gives a valid offset at or before the end (the end itself on
    Kafka); one Fetch from it per leader, with a 1-byte size limit, returns the high
    watermark (no records on Kafka, one batch on Tansu). Uses the consumer's connection
    (the private `_client`); partitions need not be assigned, positions are untouched.
    """
    partitions = list(dict.fromkeys(partitions))
    if not partitions:
        return {}
    client = consumer._client  # no public API sends a raw Fetch
    deadline = time.monotonic() + timeout
    hints: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    result: dict[TopicPartition, int] = {}
    while True:
        pending = [tp for tp in partitions if tp not in result]
        if not pending:
            return result
        if time.monotonic() > deadline:
            raise Errors.KafkaTimeoutError(f"no Fetch high watermark for {pending} in {timeout} s")
        by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(lambda: defaultdict(list))
        stale_metadata = False
        for tp in pending:
            node = client.cluster.leader_for_partition(tp)
            if node is None or node == -1:
                client.add_topic(tp.topic)
                stale_metadata = True
                continue
            by_node[node][tp.topic].append((tp.partition, hints[tp], 1))
        out_of_range: list[TopicPartition] = []
        responses = await asyncio.gather(*(
            client.send(node, FetchRequest(_END_FETCH_MAX_WAIT_MS, 0, 1, 0, list(topics.items())))
            for node, topics in by_node.items()
        ), return_exceptions=True)
        for response in responses:
            if isinstance(response, Errors.KafkaError) and response.retriable:
                stale_metadata = True
                continue
            if isinstance(response, BaseException):
                raise response
            for topic, parts in response.topics:
                for partition, error_code, highwater, *_ in parts:
                    tp = TopicPartition(topic, partition)
                    error = Errors.for_code(error_code)
                    if error is Errors.NoError:
                        result[tp] = highwater
                    elif error is Errors.OffsetOutOfRangeError:
                        out_of_range.append(tp)  # retention moved the start past the hint
                    elif error.retriable or error.invalid_metadata:
                        stale_metadata = True
                    else:
                        raise error(f"Fetch for the high watermark of {tp}")
        if out_of_range:
            hints.update(await consumer.beginning_offsets(out_of_range))
        if stale_metadata:
            await client.force_metadata_update()
        elif not out_of_range and any(tp not in result for tp in pending):
            await asyncio.sleep(0.01)  # a partition left out of the response: ask again


# --- client settings ------------------------------------------------------------------

MAX_BATCH_BYTES = 1_000_000  # 1 MB batches: ~79k msg/s vs 36-48k with the default 16 KB
# The largest record any of our producers sends (faust's default, under Kafka's default
# message.max.bytes of 1,048,588). Payloads and results are limited well below it
# (TASKFOLD_MAX_PAYLOAD_BYTES; taskfold.core.fold.limits), so a submit or a completion fits whole.
MAX_RECORD_BYTES = 1_000_000


def producer_settings(broker: BrokerLike | bool) -> dict[str, Any]:
    """aiokafka producer kwargs for this broker.

    Deviation (Tansu): aiokafka sends InitProducerId v0 and Tansu needs v3, so
    `enable_idempotence=True` fails at start with UnknownError; idempotence stays off on
    Tansu, and correctness comes from the fold dropping duplicates (ARCHITECTURE §1).
    On Kafka it is on, which drops duplicates from producer retries for free.
    """
    return {
        "acks": "all",
        "enable_idempotence": not is_tansu(broker),
        "max_batch_size": MAX_BATCH_BYTES,
        "max_request_size": MAX_RECORD_BYTES,
        "linger_ms": 5,  # throughput is CPU-bound in the client; linger barely matters
    }


TANSU_FETCH_MAX_WAIT_MS = 100
FETCH_WAIT_ENV = "TASKFOLD_TANSU_FETCH_WAIT_MS"


def fetch_max_wait_ms(broker: BrokerLike | bool) -> int:
    """Deviation: Tansu does not wake a Fetch parked at the end of the log when data arrives.

    Kafka answers a waiting Fetch as soon as min_bytes arrive, so a long max_wait costs no
    latency there (we keep aiokafka's 500 ms). Tansu first re-checks a parked Fetch after
    max_wait/2 (then halves the remaining wait), so a record appended to a tailed
    partition reaches the consumer up to max_wait/2 later: measured about 250 ms with
    500 ms, about 50 ms with 100 ms. 100 ms trades that latency against idle Fetches.
    Never 0: Tansu answers a Fetch with max_wait 0 with no partitions at all.
    """
    if not is_tansu(broker):
        return 500
    override = os.environ.get(FETCH_WAIT_ENV, "").strip()
    if not override:
        return TANSU_FETCH_MAX_WAIT_MS
    if not override.isdigit() or int(override) < 1:
        raise ValueError(f"{FETCH_WAIT_ENV} must be a whole number of milliseconds >= 1, got {override!r}")
    return int(override)


def consumer_settings(
    broker: BrokerLike | bool, *, group_id: str | None = None, fast: bool = False
) -> dict[str, Any]:
    """aiokafka consumer kwargs for this broker; with a group_id, the group timeouts too.

    A group consumer on Tansu also needs the LeaveGroup fix, so asking for group settings
    on Tansu installs it (see install_leave_group_fix).
    """
    settings: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Transactional writers to our topics are unsupported (README, "Running on a cluster"):
        # read_committed would stall catch-up at an open transaction, and on Tansu it shows
        # aborted records anyway. Our producers and faust (at_least_once) never use one.
        "isolation_level": "read_uncommitted",
        "fetch_max_wait_ms": fetch_max_wait_ms(broker),
        "max_partition_fetch_bytes": MAX_BATCH_BYTES * 2,
    }
    if group_id is not None:
        settings["group_id"] = group_id
        settings.update(group_timeouts(broker, fast=fast))
        if not is_tansu(broker):
            settings["request_timeout_ms"] = request_timeout_ms(broker)
        apply_fixes(broker)
    return settings


# --- (d) faust-streaming ---------------------------------------------------------------
# The write side (streams/) is a faust app. Its settings and its Tansu fixes live here,
# like the rest; faust is imported only inside these functions, so the CLI and the log
# client never pay for importing it.


def faust_settings(broker: BrokerLike | bool, *, fast: bool = False) -> dict[str, Any]:
    """faust App settings that work on this broker (BROKER.md, "faust settings that worked").

    At-least-once (Tansu's transactions do not hide aborted records; the fold drops
    duplicates), no web server (a second worker on the machine would die on port 6066),
    no leader topic, and the group timeouts of `group_timeouts` in seconds.
    """
    settings: dict[str, Any] = {
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "topic_disable_leader": True,
        "broker_request_timeout": request_timeout_ms(broker) / 1000,
        "broker_commit_interval": 1.0,
        "web_enabled": False,
        "producer_acks": -1,
        # faust's default linger of 0 sends every changelog row and decision in its own
        # request; 5 ms batches them (as producer_settings does for our own producers).
        "producer_linger": 0.005,
        "producer_max_batch_size": MAX_BATCH_BYTES,
        "producer_max_request_size": MAX_RECORD_BYTES,
    }
    timeouts = group_timeouts(broker, fast=fast)
    settings.update(
        broker_session_timeout=timeouts["session_timeout_ms"] / 1000,
        broker_heartbeat_interval=timeouts["heartbeat_interval_ms"] / 1000,
        broker_rebalance_timeout=timeouts["rebalance_timeout_ms"] / 1000,
    )
    return settings


def _faust_consumer_thread() -> type:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    return AIOKafkaConsumerThread


_ORIGINAL_FAUST: dict[str, Any] = {}


async def _faust_highwaters_from_fetch(self: Any, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    # Replaces AIOKafkaConsumerThread._highwaters, which returns aiokafka's end_offsets
    # (ListOffsets) outside transactions; it runs in faust's consumer thread, on the
    # loop of the consumer it reads from.
    if self.consumer.in_transaction:
        return await _ORIGINAL_FAUST["_highwaters"](self, partitions)
    return await end_offsets(self._ensure_consumer(), partitions)


def _faust_worker_consumer_with_short_fetch_wait(self: Any, transport: Any) -> AIOKafkaConsumer:
    consumer = _ORIGINAL_FAUST["_create_worker_consumer"](self, transport)
    # faust hard-codes fetch_max_wait_ms=1500; read before start() builds the fetcher.
    consumer._fetch_max_wait_ms = fetch_max_wait_ms(True)
    return consumer


_FAUST_FIXES = {
    "_highwaters": _faust_highwaters_from_fetch,
    "_create_worker_consumer": _faust_worker_consumer_with_short_fetch_wait,
}


def install_faust_fixes() -> None:
    """Deviations that reach faust-streaming 0.15.3 through aiokafka; idempotent.

    1. ListOffsets(LATEST) is short on Tansu (see `end_offsets`). faust asks for the ends
       of changelog partitions in `faust/tables/recovery.py` (`_build_highwaters` ->
       `consumer.highwaters` -> `AIOKafkaConsumerThread._highwaters` in
       `faust/transport/drivers/aiokafka.py`, which calls aiokafka's `end_offsets`).
       Recovery then stops early, or fails with `ConsistencyError: persisted offset >
       highwater`. The replacement answers with `end_offsets` above (Fetch high watermark).
    2. A parked Fetch is not woken by new data (see `fetch_max_wait_ms`), and faust's
       worker consumer hard-codes `fetch_max_wait_ms=1500`: every record would wait up to
       750 ms. The replacement `_create_worker_consumer` sets the compat value.
    Both replace methods on the class, so they cover every faust app in the process.
    """
    cls = _faust_consumer_thread()
    for name, fix in _FAUST_FIXES.items():
        current = getattr(cls, name)
        if current is not fix:
            _ORIGINAL_FAUST.setdefault(name, current)
            setattr(cls, name, fix)


def uninstall_faust_fixes() -> None:
    """Restore faust's own methods (for tests that show the deviations)."""
    cls = _faust_consumer_thread()
    for name, original in _ORIGINAL_FAUST.items():
        setattr(cls, name, original)


def faust_fixes_installed() -> bool:
    """True if install_faust_fixes() is in effect."""
    cls = _faust_consumer_thread()
    return all(getattr(cls, name) is fix for name, fix in _FAUST_FIXES.items())


def apply_faust_fixes(broker: BrokerLike | bool) -> None:
    """Install every client fix a faust worker needs, only if the broker is Tansu."""
    if is_tansu(broker):
        install_leave_group_fix()
        install_faust_fixes()
