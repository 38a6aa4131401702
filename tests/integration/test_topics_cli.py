"""`taskfold topics check|create` against the real broker, mismatches included (issue 13 item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from aiokafka.admin import NewTopic

from taskfold.broker import clients
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames, describe_topic_configs


def run(broker: Broker, names: TopicNames, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, TASKFOLD_BOOTSTRAP=broker.bootstrap, TASKFOLD_TOPIC_PREFIX=names.prefix,
                   TASKFOLD_BROKER="tansu" if broker.is_tansu else "kafka", COLUMNS="200", **env)
    return subprocess.run([sys.executable, "-m", "taskfold", "topics", *args], env=environ,
                          capture_output=True, text=True, timeout=60)


def fresh() -> TopicNames:
    return TopicNames(prefix=f"test.{uuid.uuid4().hex[:12]}.")


async def test_create_then_check_reports_every_topic_ok(broker: Broker) -> None:
    names = fresh()
    missing = run(broker, names, "check", "--partitions", "2")
    assert missing.returncode == 1
    assert f"{names.events}: topic expected present, actual missing" in missing.stderr
    created = run(broker, names, "create", "--partitions", "2")
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created (2 partitions, replication 1)") == 4
    again = run(broker, names, "create", "--partitions", "2")
    assert again.returncode == 0 and again.stdout.count(": ok (2 partitions") == 4, again
    assert run(broker, names, "check", "--partitions", "2").returncode == 0


async def test_a_mismatch_is_named_and_the_topic_is_left_as_it_is(broker: Broker) -> None:
    names = fresh()
    admin = clients.admin(broker.bootstrap)
    await admin.start()
    try:  # someone made progress before us, with a 1 s retention and 3 partitions
        await admin.create_topics([NewTopic(names.progress, 3, 1, topic_configs={"cleanup.policy": "delete",
                                                                                 "retention.ms": "1000"})])
    finally:
        await admin.close()
    done = run(broker, names, "create", "--partitions", "2")
    assert done.returncode == 1
    assert f"{names.progress}: partitions expected 2, actual 3 (refused at start)" in done.stderr
    assert f"{names.progress}: retention.ms expected 604800000, actual 1000" in done.stderr
    assert f"{names.events}: created" in done.stdout and "existing topics were not changed" in done.stderr
    configs = await describe_topic_configs(broker.bootstrap, [names.progress])
    assert configs[names.progress]["retention.ms"] == "1000"  # never changed silently
    other = run(broker, names, "check", "--partitions", "2", TASKFOLD_REPLICATION_FACTOR="3")
    assert f"{names.events}: replication factor expected 3, actual 1" in other.stderr


async def test_unusable_settings_exit_2_naming_the_setting(broker: Broker) -> None:
    done = run(broker, fresh(), "check", TASKFOLD_MIN_INSYNC_REPLICAS="2")
    assert done.returncode == 2
    assert "min_insync_replicas=2 is more than replication_factor=1" in done.stderr
