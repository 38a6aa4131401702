"""Broker settings, without a broker: each Tansu fix is switched on only for Tansu."""

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from taskfold.broker import leavegroup, settings
from taskfold.broker.topics import TopicNames, topic_configs


async def test_settings_are_valid_aiokafka_kwargs_on_both_brokers() -> None:
    for tansu in (True, False):
        clients = [
            AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **settings.producer_settings(tansu)),
            AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", **settings.consumer_settings(False, group_id="g")),
            AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", **settings.consumer_settings(tansu)),
        ]
        for client in clients:  # never started; stop() only marks them closed
            await client.stop()


def test_tansu_fixes_only_for_tansu() -> None:
    assert settings.producer_settings(True)["enable_idempotence"] is False
    assert settings.producer_settings(False)["enable_idempotence"] is True
    assert settings.producer_settings(True)["acks"] == "all"
    assert settings.group_timeouts(False) == {  # a real cluster (issue 13 item 1)
        "session_timeout_ms": 10_000, "heartbeat_interval_ms": 3000, "rebalance_timeout_ms": 30_000,
    }
    assert settings.group_timeouts(True, fast=True) == {
        "session_timeout_ms": 2000, "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 2000,
    }
    assert settings.consumer_settings(True, group_id="g")["session_timeout_ms"] == 6000
    kafka = settings.consumer_settings(False, group_id="g")
    assert kafka["session_timeout_ms"] == 10_000 and kafka["request_timeout_ms"] > 30_000
    assert "request_timeout_ms" not in settings.consumer_settings(True, group_id="g")  # Tansu as before
    assert settings.consumer_settings(True)["fetch_max_wait_ms"] == 100
    assert settings.consumer_settings(False)["fetch_max_wait_ms"] == 500


def test_group_settings_install_the_leave_group_fix_only_for_tansu() -> None:
    was = leavegroup.installed()
    try:
        leavegroup.uninstall()
        settings.consumer_settings(False, group_id="g")
        assert not leavegroup.installed()
        settings.consumer_settings(True, group_id="g")
        assert leavegroup.installed()
    finally:
        (leavegroup.install if was else leavegroup.uninstall)()


def test_topic_names_and_configs() -> None:
    names = TopicNames("acme.")
    assert names.all() == ["acme.events", "acme.heartbeats", "acme.progress", "acme.poison"]
    configs = topic_configs(names, progress_retention_ms=1000)
    assert configs["acme.events"]["retention.ms"] == "-1"
    assert configs["acme.heartbeats"]["cleanup.policy"] == "compact"
    assert configs["acme.progress"]["retention.ms"] == "1000"
    assert [t for t in names.all() if names.compacted(t)] == ["acme.heartbeats"]  # readers accept its holes


def test_the_tansu_fetch_wait_can_be_set_and_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(settings.FETCH_WAIT_ENV, "20")
    assert settings.fetch_max_wait_ms(True) == 20
    assert settings.fetch_max_wait_ms(False) == 500  # Kafka answers parked Fetches at once
    monkeypatch.setenv(settings.FETCH_WAIT_ENV, "0")
    with pytest.raises(ValueError, match="TASKFOLD_TANSU_FETCH_WAIT_MS"):
        settings.fetch_max_wait_ms(True)
