"""An agent whose broker is gone still stops on the first SIGINT or SIGTERM, within its drain
timeout, and says so in a few lines rather than megabytes (issue 10, item 6)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskfold.broker.tansu import TansuBroker
from taskfold.broker.topics import TopicNames, ensure_topics

DRAIN_TIMEOUT_S = 10.0
READY_S = 60.0
NOTICED_S = 60.0  # the agent's first failed heartbeat takes its 5 s timeout, more on a busy machine
SILENT_BYTES = 6_000  # what the agent may write from the broker's death until it noticed twice


@pytest.fixture
def doomed_broker() -> Iterator[TansuBroker]:
    """A Tansu of this test's own, so the test can kill it."""
    broker = TansuBroker().start()
    try:
        asyncio.run(ensure_topics(broker.bootstrap, TopicNames(), partitions=4))
        yield broker
    finally:
        broker.stop()


def wait_for_text(path: Path, text: str, deadline_s: float, process: subprocess.Popen, count: int = 1) -> str:
    """The file's content once `text` occurs `count` times in it; fails after the deadline or if the process exits."""
    deadline = time.monotonic() + deadline_s
    while True:
        content = path.read_text(errors="replace")
        if content.count(text) >= count:
            return content
        assert process.poll() is None, f"the agent exited ({process.returncode}) before {text!r}:\n{content}"
        assert time.monotonic() < deadline, f"{text!r} not seen {count} times in {deadline_s} s:\n{content}"
        time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]],
                         ids=["SIGINT", "SIGTERM", "SIGINT-twice"])
def test_agent_stops_within_its_drain_timeout_when_the_broker_is_gone(
        doomed_broker: TansuBroker, tmp_path: Path, signals: list[int]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFOLD_")}
    env.update(TASKFOLD_BOOTSTRAP=doomed_broker.bootstrap, TASKFOLD_BROKER="tansu", COLUMNS="200")
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", "taskfold", "agent", "--demo", "--agent-id", "a-1",
                                  "--drain-timeout", str(DRAIN_TIMEOUT_S)],
                                 env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_text(log_path, "Ctrl-C to drain", READY_S, agent)
        before = log_path.stat().st_size
        doomed_broker.stop()
        # Two reconnect lines: the agent noticed, and backs off between its tries.
        content = wait_for_text(log_path, "unreachable", NOTICED_S, agent, count=2)
        noticed = content.encode()[before:]
        assert len(noticed) < SILENT_BYTES, f"{len(noticed)} bytes while the broker was gone:\n{noticed.decode()}"
        assert "retrying in" in content
        sent = time.monotonic()
        for sig in signals:
            agent.send_signal(sig)
            # Signals sent back to back can merge into one: let the first be seen.
            wait_for_text(log_path, "a second signal stops it at once", READY_S, agent)
        bound = 3.0 if len(signals) > 1 else DRAIN_TIMEOUT_S
        code = agent.wait(timeout=bound)
        took = time.monotonic() - sent
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    content = log_path.read_text(errors="replace")
    assert took < bound, f"the agent took {took:.1f} s to stop:\n{content}"
    if len(signals) > 1:
        assert code == 1 and "stopped at once on a second signal" in content, content
    else:
        assert code == 0, content
        assert "stopped without appending AgentLeft" in content  # it says what it could not do
    assert log_path.stat().st_size < 2 * SILENT_BYTES, content
