"""Every Kafka client taskfold builds, and the cluster settings each one carries.

`client_kwargs` is the one function that turns the settings (`taskfold.config.
ClusterSettings`, environment TASKFOLD_*) into aiokafka keyword arguments: the security
protocol, the TLS context and the SASL credentials. The constructors below (`consumer`,
`producer`, `admin`, `client`) are the only places in taskfold that build an aiokafka
client, so every client gets them; `tests/unit/test_cluster_clients.py` checks that no
other module builds one. faust gets the same settings through `faust_cluster_settings`.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from taskfold.config import ClusterSettings


def _secret(value: Any) -> str | None:
    return None if value is None else value.get_secret_value()


def ssl_context(settings: ClusterSettings) -> ssl.SSLContext | None:
    """The TLS context of the settings (system CAs unless a CA file is given); None without TLS."""
    if not settings.protocol.endswith("SSL"):
        return None
    return create_ssl_context(cafile=settings.ssl_cafile, certfile=settings.ssl_certfile,
                              keyfile=settings.ssl_keyfile, password=_secret(settings.ssl_key_password))


def client_kwargs(settings: ClusterSettings | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments for security (protocol, TLS context, SASL), from the settings."""
    settings = settings if settings is not None else ClusterSettings()
    kwargs: dict[str, Any] = {"security_protocol": settings.protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.sasl_mechanism is not None:
        kwargs.update(sasl_mechanism=settings.sasl_mechanism, sasl_plain_username=settings.sasl_username,
                      sasl_plain_password=_secret(settings.sasl_password))
    return kwargs


def consumer(bootstrap: str, settings: ClusterSettings | None = None, **kwargs: Any) -> AIOKafkaConsumer:
    """An aiokafka consumer with the cluster's security settings."""
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, **client_kwargs(settings), **kwargs)


def producer(bootstrap: str, settings: ClusterSettings | None = None, **kwargs: Any) -> AIOKafkaProducer:
    """An aiokafka producer with the cluster's security settings."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **client_kwargs(settings), **kwargs)


def admin(bootstrap: str, settings: ClusterSettings | None = None, **kwargs: Any) -> AIOKafkaAdminClient:
    """An aiokafka admin client with the cluster's security settings."""
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs(settings), **kwargs)


def client(bootstrap: str, settings: ClusterSettings | None = None, **kwargs: Any) -> AIOKafkaClient:
    """A bare aiokafka client (metadata probes) with the cluster's security settings."""
    return AIOKafkaClient(bootstrap_servers=bootstrap, **client_kwargs(settings), **kwargs)


# --- group timeouts on Kafka (Tansu's are in settings) -----------------------------------

KAFKA_HEARTBEAT_MS, KAFKA_REBALANCE_MS = 3000, 30_000


def kafka_group_timeouts(settings: ClusterSettings | None = None) -> dict[str, int]:
    """A real cluster's: a TASKFOLD_SESSION_TIMEOUT_MS session (10 s), 3 s heartbeats, 30 s rebalances."""
    session = (settings if settings is not None else ClusterSettings()).session_timeout_ms
    return {"session_timeout_ms": session, "heartbeat_interval_ms": min(KAFKA_HEARTBEAT_MS, session // 3),
            "rebalance_timeout_ms": KAFKA_REBALANCE_MS}


def kafka_request_timeout_ms(settings: ClusterSettings | None = None) -> int:
    """Above the session and the rebalance timeout: Kafka holds a JoinGroup up to the rebalance timeout."""
    timeouts = kafka_group_timeouts(settings)
    return max(40_000, timeouts["session_timeout_ms"] + 5000, timeouts["rebalance_timeout_ms"] + 5000)


# --- faust ---------------------------------------------------------------------------


def _faust_credentials(settings: ClusterSettings) -> Any:
    from faust.auth import SASLCredentials, SSLCredentials

    context = ssl_context(settings)
    if settings.sasl_mechanism is not None:
        return SASLCredentials(username=settings.sasl_username, password=_secret(settings.sasl_password),
                               ssl_context=context, mechanism=settings.sasl_mechanism)
    return SSLCredentials(context) if context is not None else None


def process_client_id(worker_id: str) -> str:
    """A client id unique to this process: the worker id, the host and the pid."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "host"
    return f"taskfold-{worker_id}-{host}-{os.getpid()}"


def group_instance_id(prefix: str, worker_id: str) -> str:
    """The static member id of a worker: stable across its restarts, distinct per host."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "host"
    return f"{prefix}{worker_id}@{host}"


def changelog_configs(settings: ClusterSettings | None = None) -> dict[str, str]:
    """Topic configs faust gives the tables' changelogs and the internal topics it creates."""
    settings = settings if settings is not None else ClusterSettings()
    return {"min.insync.replicas": str(settings.min_insync_replicas)}


def faust_cluster_settings(*, tansu: bool, worker_id: str, prefix: str,
                           settings: ClusterSettings | None = None) -> dict[str, Any]:
    """faust App settings from the cluster settings: replication, standbys, client ids, security.

    Standby replicas default to 1 on Kafka (a failed-over partition's table is ready at
    once) and 0 on Tansu (each standby doubles the changelog reads of a one-machine setup).
    """
    settings = settings if settings is not None else ClusterSettings()
    standbys = settings.standby_replicas if settings.standby_replicas is not None else (0 if tansu else 1)
    out: dict[str, Any] = {
        "topic_replication_factor": settings.replication_factor,
        "table_standby_replicas": standbys,
        "broker_client_id": process_client_id(worker_id),
    }
    if not tansu:  # faust's default (20 min) would hold a worker whose writes cannot be acknowledged
        out["producer_request_timeout"] = settings.append_timeout_s
    if settings.static_membership:
        out["consumer_group_instance_id"] = group_instance_id(prefix, worker_id)
    credentials = _faust_credentials(settings)
    if credentials is not None:
        out["broker_credentials"] = credentials
    return out
