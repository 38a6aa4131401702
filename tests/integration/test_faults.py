"""The fault suite (issue 5) at CI sizes: workers and agents as real processes on the real
broker, one fault per scenario, quiescence with a deadline, then an audit of the whole log.

The scenarios live in `faults_scenarios.py`; `bench/faults.py` runs them at larger sizes.
Each prints its measured outcome (run pytest with -s to see it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from faults_scenarios import SCENARIOS, Sizes
from faults_support import FaultRun, Outcome
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.cli.cluster import LocalCluster, LogWatcher
from taskfold.log.eventlog import EventLog

pytestmark = pytest.mark.integration

CI = Sizes()


@pytest.fixture
async def run(broker: Broker, topics: TopicNames, tmp_path: Path) -> AsyncIterator[FaultRun]:
    cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, tmp_path / "state", log_dir=tmp_path)
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        partitions = len(await log.reader.partitions(topics.events))
        async with LogWatcher(log) as watcher:
            try:
                yield FaultRun(cluster, log, watcher, partitions)
            finally:
                cluster.stop_all(timeout=20)


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_fault_scenario(run: FaultRun, name: str) -> None:
    scenario: Callable[[FaultRun, Sizes], Awaitable[Outcome]] = SCENARIOS[name]
    outcome = await scenario(run, CI)
    print("\n" + outcome.report())
    assert outcome.ok, outcome.report()
