"""The agent's stop budget, its backoff, and the filter that collapses aiokafka's repeats."""

from __future__ import annotations

import asyncio
import logging

import pytest

from taskfold.agent import Agent
from taskfold.agent.process import RepeatFilter
from taskfold.agent.stopping import BACKOFF_MAX_S, MIN_STOP_S, StopBudget, backoff, bounded
from taskfold.broker.topics import TopicNames


@pytest.mark.parametrize("drain, attempts, end", [(30.0, 26.0, 30.0), (1.0, 1.0, 2.0), (0.0, 1.0, 2.0)])
def test_the_stop_fits_in_the_drain_timeout_and_keeps_a_reserve(drain: float, attempts: float, end: float) -> None:
    budget = StopBudget.starting(100.0, drain)
    assert budget.attempts_by == 100.0 + attempts and budget.close_by == 100.0 + end
    assert budget.attempts_by < budget.reports_by < budget.leave_by < budget.close_by


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n, 1.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, BACKOFF_MAX_S, BACKOFF_MAX_S]
    assert backoff(10_000, 0.2) == BACKOFF_MAX_S


async def test_bounded_gives_up_on_a_call_that_hangs_and_names_it(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    assert not await bounded(asyncio.Event().wait(), loop.time() + 0.05, "appending AgentLeft")
    assert "appending AgentLeft: no answer from the broker" in caplog.text
    assert await bounded(asyncio.sleep(0), loop.time() + 1, "a quick one")


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeat_filter_lets_one_of_each_kind_through_per_window() -> None:
    now = [0.0]
    repeats = RepeatFilter(window=60.0, clock=lambda: now[0])
    connect = "Unable connect to node with id %s: %s"
    assert repeats.filter(record("aiokafka", connect, 1, "refused"))
    assert repeats.filter(record("aiokafka", "Unable to update metadata from %s", [1]))  # another kind
    assert repeats.filter(record("taskfold.agent.agent", connect, 1, "x"))  # not aiokafka's
    now[0] = 30.0
    assert not any(repeats.filter(record("aiokafka", connect, 1, "refused")) for _ in range(300))
    now[0] = 61.0
    summary = record("aiokafka", connect, 1, "refused")
    assert repeats.filter(summary)
    assert summary.getMessage() == "Unable connect to node with id 1: refused [and 300 more like it in the last 61 s]"


async def test_an_agent_stops_while_a_broker_that_never_answers_holds_its_start_up() -> None:
    # Not a Kafka mock: a peer that accepts connections and never says a word, which is
    # one of the things a broker can do.
    accepted, peers = asyncio.Event(), []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        accepted.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    agent = Agent("a-1", {"emails": 1}, tansu=True, topics=TopicNames("test.silent."), drain_timeout=1.0)
    run = asyncio.create_task(agent.run(f"127.0.0.1:{port}", handle_signals=False))
    try:
        await asyncio.wait_for(accepted.wait(), 30)
        loop = asyncio.get_running_loop()
        asked = loop.time()
        agent.stop()
        await asyncio.wait_for(run, 10)
        assert loop.time() - asked < 2 * MIN_STOP_S
        assert not agent.ready.is_set()
    finally:
        run.cancel()
        for peer in peers:
            peer.close()
        server.close()
