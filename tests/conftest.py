"""Shared fixtures. The broker is real: TASKFOLD_BOOTSTRAP, a testcontainer, or Tansu."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from taskfold.broker.harness import Broker, start_broker
from taskfold.broker.topics import TopicNames, ensure_topics

TEST_PARTITIONS = 4


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """One broker for the whole session, started on first use and stopped at the end."""
    b = start_broker()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def topics(broker: Broker) -> TopicNames:
    """Freshly created topics under a prefix unique to this test, so tests never share data."""
    names = TopicNames(prefix=f"test.{uuid.uuid4().hex[:12]}.")
    await ensure_topics(broker.bootstrap, names, partitions=TEST_PARTITIONS)
    return names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Whatever needs the broker is an integration test, marked or not, so
    # `-m "not integration"` never starts one.
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
