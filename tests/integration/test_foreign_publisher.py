"""Issue 15, "Publishing from another language": a TaskSubmitted produced with only the
`.avsc` files, fastavro and a plain Kafka producer (tests/foreign/publish.py) runs like
any other; a wrong fingerprint is poison and a misrouted key is rejected, both with a reason."""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.cli.cluster import LocalCluster, LogWatcher
from taskfold.core.events import TaskCompleted
from taskfold.core.fold.placement import MISROUTED, home_partition
from taskfold.core.state import TaskState
from taskfold.log.eventlog import EventLog
from tests.conftest import TEST_PARTITIONS
from tests.foreign import publish as foreign

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
AVRO = REPO / "schemas" / "avro"
PUBLISHER = REPO / "tests" / "foreign" / "publish.py"
FORBIDDEN = {"taskfold", "schemas", "streams", "projections", "tests"}


class Foreign:
    """A foreign publisher's view: the bootstrap address, the events topic and the schema files."""

    def __init__(self, broker: Broker, topics: TopicNames) -> None:
        self.bootstrap, self.topic = broker.bootstrap, topics.events
        self.schema, self.fingerprint = foreign.writer_schema(AVRO, "TaskSubmitted")

    async def submit(self, record: dict, *, key: str | None = None, fingerprint: bytes | None = None) -> int:
        value = foreign.single_object(self.schema, fingerprint or self.fingerprint, record)
        headers = {"type": "TaskSubmitted", "task": record["task_id"]}
        partition, _ = await foreign.publish(self.bootstrap, self.topic, key or record["queue"], value, headers)
        return partition


@pytest.fixture
async def watched(broker: Broker, topics: TopicNames) -> AsyncIterator[LogWatcher]:
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log, LogWatcher(log) as watcher:
        yield watcher


def test_the_publisher_imports_nothing_of_the_project() -> None:
    tree = ast.parse(PUBLISHER.read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    relative = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert not relative, f"relative imports {relative} may reach the project"
    assert not {m for m in modules if m.split(".")[0] in FORBIDDEN}, modules
    assert {m.split(".")[0] for m in modules} <= {"__future__", "io", "json", "re", "time", "uuid", "pathlib",
                                                  "typing", "aiokafka", "fastavro"}, modules


async def test_a_task_submitted_from_the_schema_files_alone_runs_to_completion(
        broker: Broker, topics: TopicNames, watched: LogWatcher, tmp_path: Path) -> None:
    cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, tmp_path / "state", log_dir=tmp_path)
    try:
        cluster.worker("worker-1", "--fast-rebalance", "--tick-ms", "50")
        cluster.agent("polyglot", "-q", "foreign=1")
        record = foreign.task_submitted("foreign", "from-go-1", "echo", {"hello": "avro"}, actor="go-service")
        partition = await Foreign(broker, topics).submit(record)
        # The default murmur2 partitioner puts the queue's key in the queue's home partition.
        assert partition == home_partition("foreign", TEST_PARTITIONS)

        def completed(ledger) -> bool:
            task = ledger.state("foreign").task("from-go-1")
            return task is not None and task.state == TaskState.completed
        try:
            await watched.wait_for(completed, 90, "the foreign task completed")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; poison: {[p.reason for p in watched.poison]}\n{cluster.tails()}") from None
    finally:
        cluster.stop_all(timeout=20)
    submitted = next(e for e, v in watched.entries if e.event_id == record["event_id"])
    assert submitted.actor == "go-service" and json.loads(submitted.payload) == {"hello": "avro"}
    done = [e for e, v in watched.entries if isinstance(e, TaskCompleted) and v.accepted]
    assert [e.task_id for e in done] == ["from-go-1"]
    assert not watched.poison


async def test_a_wrong_fingerprint_is_poison_and_a_misrouted_key_is_rejected_with_the_reason(
        broker: Broker, topics: TopicNames, watched: LogWatcher) -> None:
    publisher = Foreign(broker, topics)
    bad = foreign.task_submitted("foreign", "bad-print", "echo", None, actor="go-service")
    await publisher.submit(bad, fingerprint=bytes(8))
    home = home_partition("foreign", TEST_PARTITIONS)
    stray = next(k for k in (f"k{i}" for i in range(100)) if home_partition(k, TEST_PARTITIONS) != home)
    misrouted = foreign.task_submitted("foreign", "stray", "echo", None, actor="go-service")
    assert await publisher.submit(misrouted, key=stray) != home

    def judged(ledger) -> bool:
        return bool(watched.poison) and any(e.event_id == misrouted["event_id"] for e, _ in watched.entries)
    await watched.wait_for(judged, 30, "the poison and the misrouted event read back")
    assert [p.reason for p in watched.poison] == [f"unknown writer schema fingerprint {bytes(8).hex()}"]
    verdict = next(v for e, v in watched.entries if e.event_id == misrouted["event_id"])
    assert verdict.outcome == "rejected" and verdict.reason.startswith(MISROUTED), verdict
    assert watched.ledger.state("foreign").task("stray") is None
