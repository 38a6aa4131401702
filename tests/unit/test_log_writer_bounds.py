"""Every append is bounded, and a producer is rebuilt after a fatal error (issue 13 item 5).

The producers here stand in for aiokafka's (a broker that never acknowledges, or a fatal
sequence error, cannot be made on the test broker on demand).
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import errors as Errors

from taskfold.log.records import RawRecord
from taskfold.log.writer import AppendTimeout, LogWriter

RECORD = RawRecord(key="q", value=b"v", headers=())


class Producer:
    """Acknowledges as told: never, with an error, or at offset 0."""

    def __init__(self, outcome: str) -> None:
        self.outcome, self.stopped = outcome, False

    async def start(self) -> None: ...

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, **_: object) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self.outcome == "fatal":
            future.set_exception(Errors.OutOfOrderSequenceNumber("sequence gap"))
        elif self.outcome == "ok":
            future.set_result(type("Meta", (), {"partition": 0, "offset": 0})())
        return future  # "never": a broker short of in-sync replicas, retried for ever


class Writer(LogWriter):
    def __init__(self, *outcomes: str) -> None:
        super().__init__("127.0.0.1:1", timeout_s=0.2)
        self.outcomes, self.built = list(outcomes), []

    def _new_producer(self) -> Producer:  # type: ignore[override]
        self.built.append(Producer(self.outcomes.pop(0)))
        return self.built[-1]


async def test_an_append_nobody_acknowledges_fails_in_time_and_says_cannot_write() -> None:
    writer = Writer("never")
    await writer.start()
    with pytest.raises(AppendTimeout, match=r"cannot write to the log: no acknowledgement of 1 record\(s\) to "
                                            r"events within 0.2 s"):
        await asyncio.wait_for(writer.append("events", [RECORD]), 5.0)  # before: hung for ever
    assert writer.status.startswith("cannot write: no acknowledgement")


async def test_a_fatal_producer_error_rebuilds_the_producer_for_the_next_append() -> None:
    writer = Writer("fatal", "ok")
    await writer.start()
    with pytest.raises(Errors.OutOfOrderSequenceNumber):
        await writer.append("events", [RECORD])
    assert "rebuilt for the next append" in writer.status and writer.rebuilt == 1
    positions = await writer.append("events", [RECORD])
    assert [p.offset for p in positions] == [0] and len(writer.built) == 2 and writer.status == "ok"
    await asyncio.sleep(0)  # the thrown-away producer closes in the background
    assert writer.built[0].stopped
    await writer.stop()
