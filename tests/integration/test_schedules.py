"""Recurring schedules on a real broker: a worker SIGKILLed mid-schedule fires each slot once.

Three schedules on one queue share a 1 s grid (same start_at): `catch-up` has a grace
longer than the downtime, so every slot fires, late ones after the restart; `skip` and
`once` have a 3 s grace, shorter than the downtime, so `skip` drops the slots of the
downtime and `once` fires the latest of them once. Everything is judged from the log
folded with the one fold.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from streams.beat import Beat
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.events import ScheduleCreated, TaskSubmitted
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import EventLog, Recorded
from taskfold.core.scheduling.recurring import fired_slot

from tests.conftest import TEST_PARTITIONS
from tests.integration.test_worker import eventually, workers

pytestmark = pytest.mark.integration

QUEUE = "beats"
STEP = 1000
DOWNTIME = 5000  # ms at least between the kill and the restart

Fires = dict[str, list[tuple[int, str, int]]]


async def fires(broker: Broker, topics: TopicNames) -> Fires:
    """schedule id -> [(slot, verdict, occurred_at)] of every submit a schedule fired, in log order."""
    ledger, out = Ledger(), defaultdict(list)
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        async for entry in log.read():
            if isinstance(entry, Recorded):
                verdict = ledger.apply(entry.event)
                if isinstance(entry.event, TaskSubmitted) and (slot := fired_slot(entry.event)) is not None:
                    out[slot[0]].append((slot[1], verdict.outcome, entry.event.occurred_at))
    return out


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Wait for an async condition, reading the log again at most twice a second."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.5)


def accepted_slots(seen: Fires, schedule_id: str) -> list[int]:
    return sorted(slot for slot, verdict, _ in seen.get(schedule_id, []) if verdict == "accepted")


async def test_a_killed_worker_fires_each_slot_once_and_misfires_follow_the_policy(
    broker: Broker, topics: TopicNames, tmp_path: Path,
) -> None:
    now = int(time.time() * 1000)
    start_at = now - now % STEP + 3 * STEP

    def schedule(schedule_id: str, **fields: object) -> ScheduleCreated:
        return ScheduleCreated(event_id=uuid.uuid4().hex, queue=QUEUE, occurred_at=now, actor="test",
                               schedule_id=schedule_id, interval_ms=STEP, start_at=start_at,
                               task_type="tick", **fields)

    with workers(broker, topics, tmp_path) as start:
        worker = start()
        await eventually(worker.ready_after, 60, "worker ready")
        async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
            await log.append([schedule("catch-up", misfire_grace_ms=120_000),
                              schedule("skip", misfire_grace_ms=3000),
                              schedule("once", misfire="run_once", misfire_grace_ms=3000)])

        async def fired_before_kill() -> bool:
            return len(accepted_slots(await fires(broker, topics), "catch-up")) >= 3

        await until(fired_before_kill, 60, "three slots fired before the kill")
        worker.kill()
        killed_at = int(time.time() * 1000)
        # The downtime must outlast the 3 s grace whatever the restart costs on this machine.
        await eventually(lambda: time.time() * 1000 > killed_at + DOWNTIME, DOWNTIME / 1000 + 5, "downtime over")
        worker = start()  # the same state directory: it restarts from its local store

        async def fired_after_restart() -> bool:
            seen = await fires(broker, topics)
            return all(any(s > killed_at + 8 * STEP for s in accepted_slots(seen, name))
                       for name in ("catch-up", "skip", "once"))

        await until(fired_after_restart, 90, "slots fired after the restart")
        worker.stop()

    seen = await fires(broker, topics)
    for name, entries in seen.items():
        per_slot = Counter(slot for slot, verdict, _ in entries if verdict == "accepted")
        assert set(per_slot.values()) == {1}, f"{name}: a slot accepted twice: {per_slot}"
        assert all(v in ("accepted", "duplicate") for _, v, _ in entries), f"{name}: rejected fires: {entries}"
        assert all((slot - start_at) % STEP == 0 for slot in per_slot), f"{name}: a slot off the grid"

    catch_up = accepted_slots(seen, "catch-up")
    assert catch_up == list(range(start_at, catch_up[-1] + 1, STEP)), "catch-up: a slot missing"
    late = [o - s for s, v, o in seen["catch-up"] if v == "accepted" and s > killed_at]
    assert max(late) > 3 * STEP, "the slots of the downtime were fired late, after the restart"

    skip, once = accepted_slots(seen, "skip"), accepted_slots(seen, "once")
    missing = sorted(set(range(start_at, skip[-1], STEP)) - set(skip))
    assert missing and any(s > killed_at for s in missing), f"skip: no slot of the downtime dropped: {skip}"
    assert set(skip) <= set(once), "once fires every slot skip fires"
    extra = sorted(set(once) - set(skip))
    assert extra and all(s in missing for s in extra), f"run_once: the downtime fired no slot: {once}"
    print(f"catch-up fired {len(catch_up)} slots; skip dropped {len(missing)}; run_once fired {extra} of them; "
          f"duplicates folded: {sum(v == 'duplicate' for e in seen.values() for _, v, _ in e)}")


async def test_two_beats_firing_the_same_slots_submit_each_slot_once(broker: Broker, topics: TopicNames) -> None:
    """Two processors that both believe they own the queue (a rebalance's overlap) fire every
    slot twice; the ids derived from the slot make each second submit a duplicate."""
    now = int(time.time() * 1000)
    start_at = now - now % STEP + 2 * STEP
    every = set(range(TEST_PARTITIONS))
    beats = [Beat(broker.bootstrap, topics, tansu=broker.is_tansu, actor=f"beat-{n}",
                  clock_ms=lambda: int(time.time() * 1000), owned=lambda: every, tick_ms=50) for n in (1, 2)]
    runs = [asyncio.create_task(beat.run()) for beat in beats]
    try:
        async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
            await log.append([ScheduleCreated(event_id=uuid.uuid4().hex, queue=QUEUE, occurred_at=now, actor="test",
                                              schedule_id="pair", interval_ms=STEP, start_at=start_at,
                                              task_type="tick")])

        async def both_fired() -> bool:
            seen = await fires(broker, topics)
            return len(accepted_slots(seen, "pair")) >= 4 and all(beat.fired >= 4 for beat in beats)

        await until(both_fired, 60, "both beats fired four slots")
    finally:
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
    entries = (await fires(broker, topics))["pair"]
    per_slot = Counter(slot for slot, verdict, _ in entries if verdict == "accepted")
    assert set(per_slot.values()) == {1}, f"a slot accepted twice: {per_slot}"
    assert sum(v == "duplicate" for _, v, _ in entries) > 0, "the beats never raced (the test proves nothing)"
    assert sorted(per_slot) == list(range(start_at, max(per_slot) + 1, STEP))
