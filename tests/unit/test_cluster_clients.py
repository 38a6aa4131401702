"""Kafka readiness without a cluster: every client we build constructs, for Kafka and for Tansu."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import certifi
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from projections.live import LiveProjection
from streams.app import WorkerOptions, build
from streams import faustcompat
from taskfold.broker import clients, settings
from taskfold.broker.topics import TopicNames
from taskfold.config import ClusterSettings
from taskfold.log.eventlog import EventLog

NOWHERE = "127.0.0.1:1"  # never connected: the clients are built, not started


def worker_consumer(tmp_path: Path, tansu: bool) -> AIOKafkaConsumer:
    """The scheduler worker's group consumer, built by faust from our settings."""
    options = WorkerOptions(store="memory://", state_dir=tmp_path, read_heartbeats=False)
    app = build(NOWHERE, TopicNames(), tansu=tansu, partitions=4, options=options).app
    return app.consumer._thread._create_worker_consumer(app.transport)


@pytest.mark.parametrize("tansu", [False, True], ids=["kafka", "tansu"])
async def test_the_worker_sdk_and_projection_consumers_construct(tmp_path: Path, tansu: bool) -> None:
    worker = worker_consumer(tmp_path, tansu)
    session, request = worker._session_timeout_ms, worker._request_timeout_ms
    assert worker._heartbeat_interval_ms < session <= request
    assert worker._rebalance_timeout_ms <= min(request, 30_000)
    if not tansu:  # a real cluster: sessions of 10-15 s, heartbeats every 3 s
        assert 10_000 <= session <= 15_000 and worker._heartbeat_interval_ms == 3000
    sdk = EventLog(NOWHERE, TopicNames(), tansu=tansu).reader._consumer()
    live = LiveProjection(NOWHERE, TopicNames(), tmp_path / "store", [], tansu=tansu)
    try:
        projection = [reader._consumer() for reader in live._readers.values()]
        for consumer in [worker, sdk, *projection]:
            await consumer.stop()  # never started: stop() only marks it closed
    finally:
        live.store.close()


# --- issue 13 items 2 and 3: replication, client ids, SASL and TLS reach every client ---

ROOTS = ("taskfold", "streams", "projections")
CONSTRUCTORS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaClient"}


def test_no_module_builds_an_aiokafka_client_but_the_clients_module() -> None:
    root = Path(__file__).resolve().parents[2]
    builders = []
    for path in sorted(p for r in ROOTS for p in (root / r).rglob("*.py")):
        if path == root / "taskfold/broker/clients.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in CONSTRUCTORS:
                    builders.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    assert builders == [], "build clients with taskfold.broker.clients, which adds the security settings"


@pytest.fixture
def client_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, as a client's mutual-TLS identity."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=agent",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def secured(monkeypatch: pytest.MonkeyPatch, client_pair: tuple[Path, Path]) -> None:
    """SCRAM-SHA-512 over TLS with a CA file and a client certificate, as an operator sets it."""
    cert, key = client_pair
    for name, value in {"SASL_MECHANISM": "SCRAM-SHA-512", "SASL_USERNAME": "alice", "SASL_PASSWORD": "s3cret",
                        "SSL_CAFILE": certifi.where(), "SSL_CERTFILE": str(cert), "SSL_KEYFILE": str(key),
                        "REPLICATION_FACTOR": "3", "MIN_INSYNC_REPLICAS": "2"}.items():
        monkeypatch.setenv(f"TASKFOLD_{name}", value)


def assert_secured(client: object) -> None:
    inner = getattr(client, "_client", None) or getattr(client, "client", client)  # the producer has no _client
    assert inner._security_protocol == "SASL_SSL"
    assert inner._sasl_mechanism == "SCRAM-SHA-512" and inner._sasl_plain_username == "alice"
    assert inner._sasl_plain_password == "s3cret" and inner._ssl_context is not None


@pytest.mark.usefixtures("secured")
async def test_every_client_receives_the_security_settings(tmp_path: Path) -> None:
    options = WorkerOptions(store="memory://", state_dir=tmp_path, read_heartbeats=False)
    app = build(NOWHERE, TopicNames(), tansu=False, partitions=4, options=options).app
    event_log = EventLog(NOWHERE, TopicNames())
    live = LiveProjection(NOWHERE, TopicNames(), tmp_path / "store", [])
    built = [
        event_log.reader._consumer(), event_log.writer._new_producer(),  # SDK, CLI, gateway writes
        *(reader._consumer() for reader in live._readers.values()),  # projections
        clients.admin(NOWHERE), clients.client(NOWHERE),  # topics.py, harness.detect_tansu
        app.consumer._thread._create_worker_consumer(app.transport), app.producer._new_producer(),  # faust
    ]
    try:
        for client in built:
            assert_secured(client)
    finally:
        live.store.close()
        for client in built:
            if hasattr(client, "stop"):
                await client.stop()


@pytest.mark.parametrize("tansu", [False, True], ids=["kafka", "tansu"])
def test_the_worker_replicates_its_topics_and_names_each_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tansu: bool
) -> None:
    monkeypatch.setenv("TASKFOLD_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("TASKFOLD_MIN_INSYNC_REPLICAS", "2")
    monkeypatch.setenv("TASKFOLD_STATIC_MEMBERSHIP", "true")
    options = WorkerOptions(worker_id="worker-1", store="memory://", state_dir=tmp_path, read_heartbeats=False)
    topology = build(NOWHERE, TopicNames(), tansu=tansu, partitions=4, options=options)
    conf = topology.app.conf
    assert conf.topic_replication_factor == 3
    assert conf.table_standby_replicas == (0 if tansu else 1)
    assert conf.broker_client_id.startswith("taskfold-worker-1-") and conf.broker_client_id.endswith(f"-{os.getpid()}")
    assert conf.consumer_group_instance_id.startswith("taskfold.worker-1@")
    for table in (topology.table, topology.relay_table):
        assert table.changelog_topic.config["min.insync.replicas"] == "2"


def test_unusable_security_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFOLD_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError, match="needs sasl_mechanism, sasl_username and sasl_password"):
        ClusterSettings()
    monkeypatch.delenv("TASKFOLD_SECURITY_PROTOCOL")
    monkeypatch.setenv("TASKFOLD_SSL_CAFILE", "/nonexistent/ca.pem")
    with pytest.raises(ValidationError, match="ssl_cafile: no such file"):
        ClusterSettings()
    monkeypatch.delenv("TASKFOLD_SSL_CAFILE")
    monkeypatch.setenv("TASKFOLD_MIN_INSYNC_REPLICAS", "2")
    with pytest.raises(ValidationError, match="more than replication_factor=1"):
        ClusterSettings()


def test_without_settings_clients_speak_plaintext() -> None:
    assert clients.client_kwargs(ClusterSettings()) == {"security_protocol": "PLAINTEXT"}


async def test_transactions_are_not_used_and_every_reader_reads_uncommitted(tmp_path: Path) -> None:
    """Issue 13 item 7: transactional writers to events are unsupported, said so, and never half-used."""
    for tansu in (False, True):
        assert "transactional_id" not in settings.producer_settings(tansu)
        assert settings.consumer_settings(tansu)["isolation_level"] == "read_uncommitted"
        assert faustcompat.faust_settings(tansu)["processing_guarantee"] == "at_least_once"
    worker = worker_consumer(tmp_path, tansu=False)
    assert worker._isolation_level == "read_uncommitted"
    await worker.stop()


async def test_a_longer_session_raises_the_request_timeout_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFOLD_SESSION_TIMEOUT_MS", "60000")  # faust's default, for a slow network
    worker = worker_consumer(tmp_path, tansu=False)
    assert (worker._session_timeout_ms, worker._request_timeout_ms) == (60_000, 65_000)
    await worker.stop()
