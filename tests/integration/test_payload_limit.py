"""Payloads at, just under and over the limit on a real broker, and the worker lives on.

Issue 10, item 4: a 900 KB payload the gateway accepted made the scheduler worker write
a task row carrying the payload JSON-escaped (about twice its size) to its changelog;
the producer refused it, faust crashed, and every later task stayed queued. Here our
writers refuse a payload over TASKFOLD_MAX_PAYLOAD_BYTES, a hostile TaskSubmitted appended
raw is rejected by the fold, payloads and results at the limit made of quotes (the worst
case for JSON escaping) run to completion, and later tasks still run.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.edge import payload_limit
from taskfold.core.requests import InvalidRequest, submission
from taskfold.core.events import TaskAssigned
from taskfold.core.state import TaskState
from taskfold.core.testing import Events
from tests.integration.test_worker import Agents, agents, eventually, workers

pytestmark = pytest.mark.integration

QUEUE = "uploads"


def quotes(size: int) -> str:
    """JSON text of exactly `size` bytes made of escaped quotes: its JSON-escaped copy is twice as big."""
    body = (size - 2) // 2
    text = json.dumps('"' * body)
    return text if len(text) == size else json.dumps('"' * body + "x")


class BigResults(Agents):
    """Agents that complete task `result-at-limit` with a result of exactly the limit."""

    async def _run(self, assigned: TaskAssigned) -> None:
        e = Events(queue=assigned.queue, seed=uuid.uuid4().hex, now=int(time.time() * 1000))
        a = (assigned.task_id, assigned.agent_id, assigned.attempt)
        result = quotes(payload_limit()) if assigned.task_id == "result-at-limit" else "null"
        await self.log.append([e.start(*a), e.complete(*a, result=result)])


def test_writers_refuse_a_payload_over_the_limit_naming_it() -> None:
    limit = payload_limit()
    with pytest.raises(InvalidRequest) as refused:
        submission(QUEUE, "echo", payload=quotes(limit + 1))
    assert refused.value.problems == [
        ("payload", f"payload is {limit + 1:,} bytes, over the limit of {limit:,} (TASKFOLD_MAX_PAYLOAD_BYTES)")]


async def test_payloads_at_the_limit_run_and_an_oversized_raw_submit_is_rejected(
    broker: Broker, topics: TopicNames, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Agents, "_run", BigResults._run)
    limit = payload_limit()
    at = submission(QUEUE, "echo", task_id="payload-at-limit", payload=quotes(limit))
    under = submission(QUEUE, "echo", task_id="payload-under-limit", payload=quotes(limit - 1))
    result = submission(QUEUE, "echo", task_id="result-at-limit")
    e = Events(queue=QUEUE, seed=uuid.uuid4().hex, now=int(time.time() * 1000))
    # Bypassing our writers, as the gateway did: 900 KB, still under the record limit.
    hostile = e.submit("hostile", payload=quotes(921_600))
    later = [submission(QUEUE, "echo", task_id=f"later-{n}", payload='{"n": %d}' % n) for n in range(3)]
    with workers(broker, topics, tmp_path) as start:
        worker = start()
        await eventually(worker.ready_after, 60, "worker ready")
        async with agents(broker, topics, "a1") as crew:
            await crew.append([e.join("a1", slots=2)])
            await crew.append([at, under, result, hostile])
            await crew.append(later)
            mine = [at, under, result, *later]

            def done() -> bool:
                return all(crew.state(QUEUE, t.task_id) == TaskState.completed for t in mine)

            def detail() -> str:  # no payloads: they are half a megabyte each
                states = {t.task_id: crew.state(QUEUE, t.task_id) for t in mine}
                return f"states {states}; worker said {worker.lines[-3:]}; worker exit code {worker.proc.poll()}"

            await eventually(done, 60, "every task within the limit completed", detail)
            assert worker.proc.poll() is None, "the worker died"
        [(event, verdict)] = crew.rejected
        assert event.task_id == "hostile"
        assert verdict == ("rejected: payload is 921,600 bytes, over the limit of 786,432 "
                           "(the fold's hard maximum)")
        assert crew.ledger.state(QUEUE).task("result-at-limit").result == quotes(limit)
        assert worker.stop() == 0
    log = (next(tmp_path.glob("worker-*.log"))).read_text(errors="replace")
    assert "crash" not in log and "MessageSizeTooLarge" not in log
