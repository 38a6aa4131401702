"""The coalescer: appends of one window go out in one call, in order, and share its fate."""

from __future__ import annotations

import asyncio

import pytest

from taskfold.core.testing import Events
from taskfold.log.coalesce import Coalescer, NotAppended
from taskfold.log.eventlog import EventLog
from tests.unit.waiting import until



class Sink:
    """An append_all that records each call; `gate` holds calls until set; `fail` makes the next call raise."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            fail, self.fail = self.fail, None
            if fail is not None:
                raise fail
            return [f"at:{item}" for item in items]
        finally:
            self.in_flight -= 1


async def test_appends_within_the_window_go_out_in_one_call_in_submission_order() -> None:
    sink = Sink()
    coalescer = Coalescer(sink, window_s=0.05)
    first = coalescer.submit(["a1", "a2"])
    second = coalescer.submit(["b1"])
    third = coalescer.submit(["c1", "c2"])
    assert await asyncio.gather(first, second, third) == [["at:a1", "at:a2"], ["at:b1"], ["at:c1", "at:c2"]]
    assert sink.calls == [["a1", "a2", "b1", "c1", "c2"]] and coalescer.rounds == 1


async def test_appends_made_while_a_round_is_in_flight_form_the_next_round_never_overlapping() -> None:
    sink = Sink()
    sink.gate.clear()
    coalescer = Coalescer(sink, window_s=0.0)
    first = coalescer.submit(["a"])
    await until(lambda: sink.calls, "the first round's call")
    later = [coalescer.submit([f"b{i}"]) for i in range(3)]
    await asyncio.sleep(0)
    assert sink.calls == [["a"]], "nothing may go while a round is in flight"
    sink.gate.set()
    assert await first == ["at:a"]
    assert await asyncio.gather(*later) == [["at:b0"], ["at:b1"], ["at:b2"]]
    assert sink.calls == [["a"], ["b0", "b1", "b2"]] and sink.most_in_flight == 1


async def test_a_round_that_fails_fails_every_waiter_with_its_cause() -> None:
    sink = Sink()
    sink.fail = cause = ConnectionError("broker unreachable (injected)")
    coalescer = Coalescer(sink, window_s=0.01)
    waiters = [coalescer.submit([f"x{i}"]) for i in range(3)]
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(o is cause for o in outcomes), outcomes
    assert await coalescer.append(["y"]) == ["at:y"], "a failed round does not poison the next one"


async def test_an_append_after_one_that_failed_is_never_made_and_names_the_cause() -> None:
    sink = Sink()
    sink.gate.clear()
    sink.fail = ConnectionError("broker unreachable (injected)")
    coalescer = Coalescer(sink, window_s=0.0)
    start = coalescer.submit(["started"])
    await until(lambda: sink.calls, "the start's round")
    outcome = coalescer.submit(["completed"], after=start)  # the start is in flight: the next round
    other = coalescer.submit(["someone else's"])
    sink.gate.set()
    with pytest.raises(ConnectionError):
        await start
    with pytest.raises(NotAppended, match="broker unreachable") as refused:
        await outcome
    assert isinstance(refused.value.__cause__, ConnectionError)
    assert await other == ["at:someone else's"]
    assert sink.calls == [["started"], ["someone else's"]], "the outcome never reached the log"


async def test_an_append_after_one_in_the_same_window_shares_its_call_behind_it() -> None:
    sink = Sink()
    coalescer = Coalescer(sink, window_s=0.05)
    start = coalescer.submit(["started"])
    outcome = coalescer.submit(["completed"], after=start)
    assert await outcome == ["at:completed"] and await start == ["at:started"]
    assert sink.calls == [["started", "completed"]]


async def test_an_append_whose_waiter_was_cancelled_before_its_round_is_dropped() -> None:
    sink = Sink()
    coalescer = Coalescer(sink, window_s=0.05)
    gone = coalescer.submit(["gone"])
    kept = coalescer.submit(["kept"])
    gone.cancel()
    follower = coalescer.submit(["follows gone"], after=gone)
    assert await kept == ["at:kept"]
    with pytest.raises(NotAppended, match="cancelled"):
        await follower
    assert sink.calls == [["kept"]]


async def test_an_event_that_cannot_be_encoded_fails_its_own_append_not_the_window() -> None:
    log = EventLog("127.0.0.1:1", window_s=0.05)  # never started: nothing may reach a writer
    e = Events()
    bad = e.submit("t1")
    object.__setattr__(bad, "priority", "not a priority")  # what no validated event holds
    with pytest.raises(Exception) as raised:
        log.submit([bad])
    assert not isinstance(raised.value, NotAppended)
    assert log.coalescer is not None and log.coalescer.rounds == 0


@pytest.mark.parametrize("busy_window_s, calls", [(None, [["a"], ["b"], ["c"]]), (0.5, [["a"], ["b", "c"]])])
async def test_a_round_that_follows_another_closely_waits_the_busy_window(busy_window_s, calls) -> None:
    sink = Sink()
    coalescer = Coalescer(sink, window_s=0.005, busy_window_s=busy_window_s, busy_within_s=10.0)
    await coalescer.append(["a"])  # a lone append: the short window
    first = coalescer.submit(["b"])  # right after it: steady traffic
    await asyncio.sleep(0.05)  # the scenario: the next append comes 50 ms later, past the short window
    second = coalescer.submit(["c"])
    assert await first == ["at:b"] and await second == ["at:c"]
    assert sink.calls == calls
    assert coalescer.busy_rounds == (0 if busy_window_s is None else 1)
