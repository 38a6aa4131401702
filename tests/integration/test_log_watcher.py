"""The LogWatcher that end-to-end tests and benchmarks wait on: a timeout says whether the
watcher or the fleet stalled, by comparing the watcher's fold with a fresh read."""

from __future__ import annotations

import pytest

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.requests import submission
from taskfold.cli.cluster import LogWatcher
from taskfold.log.eventlog import EventLog

pytestmark = pytest.mark.integration


async def test_a_timeout_reports_the_watchers_fold_next_to_a_fresh_read(broker: Broker, topics: TopicNames) -> None:
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        async with LogWatcher(log) as watcher:
            await log.append([submission("diag", "echo", task_id=f"t-{i}") for i in range(3)])
            await watcher.wait_for(lambda l: len(l.state("diag").tasks) == 3, 30, "three submitted")
            with pytest.raises(TimeoutError) as raised:
                await watcher.wait_for(lambda l: False, 0.2, "never")
    message = str(raised.value)
    assert "never did not happen within 0.2 s" in message
    assert "watcher folded 3 events {'diag': {'queued': 3}}" in message
    assert "a fresh read folds 3 events {'diag': {'queued': 3}}" in message
