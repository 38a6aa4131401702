"""Client settings for this broker: Kafka's, or Tansu's where Tansu deviates (BROKER.md).

Every Tansu setting names the deviation it exists for, is used only when the broker is
Tansu, and has a test in `tests/integration/test_tansu_deviations.py` that shows the
deviation, so the setting can go once the broker is fixed. The client fixes live beside
it: `leavegroup` (the one process-wide aiokafka fix) and `highwater` (the end of a
partition, right on every broker); faust's settings and fixes are `streams.faustcompat`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

from taskfold.broker import clients, leavegroup


class BrokerLike(Protocol):
    is_tansu: bool


def is_tansu(broker: BrokerLike | bool) -> bool:
    """True if `broker` (a harness.Broker, or a plain bool) is Tansu."""
    return broker if isinstance(broker, bool) else bool(broker.is_tansu)


def apply_fixes(broker: BrokerLike | bool) -> None:
    """Install the process-wide client fixes, only if the broker is Tansu."""
    if is_tansu(broker):
        leavegroup.install()


# --- consumer group timeouts -----------------------------------------------------------


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


# --- producers and consumers -----------------------------------------------------------

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


@dataclass(frozen=True)
class DemandWait:
    """A tailing reader's Fetch max_wait on Tansu: short while a caller waits on it, long otherwise."""

    short_ms: int
    long_ms: int
    linger_s: float = 1.0  # stay short this long after the last wait: a client's next write follows soon

    def wait_ms(self, waiting: int, idle_s: float = float("inf")) -> int:
        """The next Fetch's max_wait with `waiting` callers waiting, the last one done `idle_s` ago.

        Each Tansu Fetch that finds records lists every batch of the partition (BROKER.md),
        so a reader that nobody waits on should fetch rarely and take many batches at once:
        in a burst, the gateway's 20 ms events reader sent more Fetches than any other
        reader of the partition (bench/fetchcount.py). Latency is bought only when asked for.
        """
        return self.short_ms if waiting > 0 or idle_s < self.linger_s else self.long_ms


def set_fetch_max_wait(consumer: Any, wait_ms: int) -> None:
    """Change a consumer's max_wait from its next Fetch on (aiokafka reads it per request)."""
    if wait_ms < 1:  # Tansu answers max_wait 0 with no partitions
        raise ValueError(f"a fetch max_wait must be >= 1 ms, got {wait_ms}")
    consumer._fetch_max_wait_ms = wait_ms  # what start() hands the fetcher
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        fetcher._fetch_max_wait_ms = wait_ms


def consumer_settings(
    broker: BrokerLike | bool, *, group_id: str | None = None, fast: bool = False
) -> dict[str, Any]:
    """aiokafka consumer kwargs for this broker; with a group_id, the group timeouts too.

    A group consumer on Tansu also needs the LeaveGroup fix, so asking for group settings
    on Tansu installs it (see `leavegroup.install`).
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
