"""The fault suite's harness: real processes on a real broker, a live fold to wait on, and
the closing audit of the whole log.

A scenario (see `faults_scenarios.py`) works in these steps:

1. Start workers and demo agents as child processes (`LocalCluster`) and put load on them.
2. Inject the fault (a signal, a rebalance, duplicate or garbage records).
3. Wait for quiescence: every task terminal, with a deadline (`FaultRun.quiet`).
4. `FaultRun.finish`: stop every process that is still up (SIGTERM, so agents drain and
   workers flush), replay the `events` topic from offset 0 with a fresh reader and fold,
   audit that replay, and count the `poison` topic.
5. Compare what was measured with what the fault predicts (`Outcome.expect`); a test
   asserts that nothing differs, `bench/faults.py` prints the same report.

Every wait is on a condition with a deadline; nothing sleeps to let time pass.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from taskfold.broker.topics import queue_partition
from taskfold.audit import audit
from taskfold.core.requests import submission
from taskfold.cli.cluster import LocalCluster, LogWatcher
from taskfold.core.events import AgentLeft, Event, TaskCompleted, TaskSubmitted
from taskfold.core.fold import Ledger
from taskfold.log import LogReader
from taskfold.log.eventlog import EventLog, Poison
from taskfold.core.state import TERMINAL, Verdict

FAST = ("--fast-rebalance", "--tick-ms", "50")
PROCESSED = re.compile(r"processed: (.*)$", re.MULTILINE)


@dataclass
class Outcome:
    """What one scenario measured, and each expectation with what was found."""

    scenario: str
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    tasks: int = 0
    facts: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, Any, Any]] = field(default_factory=list)  # (what, expected, found)

    def note(self, **facts: Any) -> None:
        """Record measurements (times, counts) for the report."""
        self.facts.update(facts)

    def expect(self, what: str, expected: Any, found: Any) -> None:
        """Record an exact expectation; a mismatch fails the scenario."""
        self.checks.append((what, expected, found))

    @property
    def failures(self) -> list[str]:
        """The expectations that did not hold."""
        return [f"{what}: expected {expected!r}, found {found!r}" for what, expected, found in self.checks
                if expected != found]

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self) -> str:
        """A few readable lines: verdict, facts, and any failed expectation."""
        lines = [f"{self.scenario}: {'PASS' if self.ok else 'FAIL'} - {self.tasks} tasks in {self.seconds:.1f} s"]
        lines += [f"  {k}: {_show(v)}" for k, v in self.facts.items()]
        lines += [f"  FAILED {f}" for f in self.failures]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The outcome as one JSON-able dict."""
        return {"scenario": self.scenario, "ok": self.ok, "tasks": self.tasks, "seconds": round(self.seconds, 2),
                "facts": {k: _plain(v) for k, v in self.facts.items()}, "failures": self.failures}


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, Counter):
        return dict(sorted(value.items()))
    return value


def _show(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return str(value)


class OpenTasks:
    """The tasks not yet terminal, kept current from the watcher's new entries.

    Checking every task on every event would make waits quadratic in the load (10,000
    tasks x 50,000 events in the bench), so only the tasks an event touched are looked
    at again; an accepted AgentLeft (which can end many attempts) re-checks them all.
    """

    def __init__(self, watcher: LogWatcher) -> None:
        self.watcher = watcher
        self.open: set[tuple[str, str]] = set()
        self.tasks = 0  # accepted submits
        self.completions = 0  # accepted completions
        self._seen = 0

    def refresh(self) -> OpenTasks:
        """Take in the entries read since the last call."""
        ledger, entries = self.watcher.ledger, self.watcher.entries
        sweep = False
        for event, verdict in entries[self._seen:]:
            task_id = getattr(event, "task_id", None)
            if task_id is None:
                sweep = sweep or (isinstance(event, AgentLeft) and verdict.accepted)
                continue
            if verdict.accepted:
                self.tasks += isinstance(event, TaskSubmitted)
                self.completions += isinstance(event, TaskCompleted)
            self._recheck(ledger, (event.queue, task_id))
        self._seen = len(entries)
        if sweep:
            for key in list(self.open):
                self._recheck(ledger, key)
        return self

    def _recheck(self, ledger: Ledger, key: tuple[str, str]) -> None:
        task = ledger.state(key[0]).task(key[1])
        if task is None or task.state in TERMINAL:
            self.open.discard(key)
        else:
            self.open.add(key)


@dataclass
class Replay:
    """The whole `events` topic folded afresh, its audit, and the `poison` topic."""

    pairs: list[tuple[Event, Verdict]]
    ledger: Ledger
    poison_read: int
    forwarded: list[tuple[str, str]]  # (source-position, reason) of each record on `poison`
    _by_id: dict[str, list[Verdict]] = field(default_factory=dict)

    def verdicts(self, event_id: str) -> list[str]:
        """The outcomes of every copy of one event id, in log order."""
        return [v.outcome for v in self.copies(event_id)]

    def copies(self, event_id: str) -> list[Verdict]:
        """The verdicts of every copy of one event id, in log order."""
        if not self._by_id:
            for event, verdict in self.pairs:
                self._by_id.setdefault(event.event_id, []).append(verdict)
        return self._by_id.get(event_id, [])

    def accepted(self, kind: type) -> list:
        """The accepted events of a type, in log order."""
        return [e for e, v in self.pairs if isinstance(e, kind) and v.accepted]


class FaultRun:
    """One scenario's cluster, the log it writes to, and a live fold to wait on."""

    def __init__(self, cluster: LocalCluster, log: EventLog, watcher: LogWatcher, partitions: int) -> None:
        self.cluster, self.log, self.watcher, self.partitions = cluster, log, watcher, partitions
        self.open = OpenTasks(watcher)
        self.killed: set[str] = set()
        self.exits: dict[str, int | None] = {}  # exit codes of the children stopped so far

    # -- load ---------------------------------------------------------------------------

    async def submit(self, queue: str, n: int, task_type: str = "echo", prefix: str = "t", **options: Any) -> list[str]:
        """Append n submits with task ids prefix-0..n-1 (in batches of 1,000); return the ids."""
        events = [submission(queue, task_type, task_id=f"{prefix}-{i}", **options) for i in range(n)]
        for start in range(0, n, 1000):
            await self.log.append(events[start:start + 1000])
        return [e.task_id for e in events]

    def queues(self, prefix: str) -> list[str]:
        """One queue name per partition, so that every partition carries load."""
        found: dict[int, str] = {}
        n = 0
        while len(found) < self.partitions:
            found.setdefault(queue_partition(f"{prefix}{n}", self.partitions), f"{prefix}{n}")
            n += 1
        return [found[p] for p in range(self.partitions)]

    # -- processes ------------------------------------------------------------------------

    def worker(self, name: str, *args: str) -> None:
        """Start (or restart) a scheduler worker with fast rebalances and a 50 ms tick."""
        self.killed.discard(name)
        self.cluster.worker(name, *FAST, *args)

    def agent(self, name: str, *args: str) -> None:
        """Start (or restart) a demo agent."""
        self.killed.discard(name)
        self.cluster.agent(name, *args)

    def kill(self, name: str) -> None:
        """SIGKILL one child (it will not drain, leave or report)."""
        self.cluster.kill(name)
        self.killed.add(name)

    async def stop(self, name: str) -> int | None:
        """SIGTERM one child and wait for its exit code, without blocking the live fold."""
        self.exits[name] = await asyncio.to_thread(self.cluster.stop, name, 30.0)
        return self.exits[name]

    def alive(self) -> list[str]:
        """The children still running."""
        return sorted(n for n, p in self.cluster.processes.items() if p.poll() is None)

    # -- waiting --------------------------------------------------------------------------

    async def until(self, condition: Callable[[Ledger], bool], timeout: float, what: str) -> float:
        """Wait for a condition on the live fold; the seconds it took."""
        t0 = time.monotonic()
        await self.watcher.wait_for(condition, timeout, what)
        return time.monotonic() - t0

    async def agents_joined(self, queues: Iterable[str], agents: Iterable[str], timeout: float = 60) -> None:
        """Wait until every agent has an active seat in every queue."""
        queues, agents = list(queues), list(agents)

        def seated(ledger: Ledger) -> bool:
            return all((m := ledger.state(q).member(a)) is not None and m.active for q in queues for a in agents)
        await self.until(seated, timeout, f"agents {agents} seated in {queues}")

    def open_tasks(self) -> int:
        """Tasks the live fold knows that are not terminal."""
        return len(self.open.refresh().open)

    def completed(self) -> int:
        """Accepted completions the live fold has seen."""
        return self.open.refresh().completions

    def terminal(self) -> int:
        """Tasks the live fold has seen end."""
        self.open.refresh()
        return self.open.tasks - len(self.open.open)

    async def quiet(self, tasks: int, timeout: float) -> float:
        """Wait until the live fold knows at least `tasks` tasks and every one is terminal."""
        def done(_: Ledger) -> bool:
            self.open.refresh()
            return self.open.tasks >= tasks and not self.open.open
        try:
            return await self.until(done, timeout, f"{tasks} tasks terminal")
        except TimeoutError as exc:
            stuck = sorted(self.open.open)[:5]
            detail = [(q, t, self.watcher.ledger.state(q).task(t)) for q, t in stuck]
            raise TimeoutError(f"{exc}; {len(self.open.open)} open, e.g. {detail}\n{self.cluster.tails()}") from None

    async def seen(self, event_ids: Iterable[str], timeout: float, what: str, since: int = 0) -> float:
        """Wait until the live fold has read every one of these event ids (from entry `since` on)."""
        wanted = set(event_ids)
        return await self.first(lambda e, v: wanted.discard(e.event_id) or not wanted, timeout, what, since)

    async def first(self, match: Callable[[Event, Verdict], bool], timeout: float, what: str,
                    since: int = 0) -> float:
        """Wait until an entry read from index `since` on matches (each entry is looked at once)."""
        cursor, found = since, False

        def scan(_: Ledger) -> bool:
            nonlocal cursor, found
            entries = self.watcher.entries
            while not found and cursor < len(entries):
                found = bool(match(*entries[cursor]))
                cursor += 1
            return found
        return await self.until(scan, timeout, what)

    async def poison_forwarded(self, count: int, timeout: float) -> float:
        """Wait until the `poison` topic holds at least `count` records (read live: it is not folded)."""
        t0 = time.monotonic()

        async def counted() -> None:
            seen = 0
            async with LogReader(self.cluster.bootstrap, tansu=self.cluster.tansu) as reader:
                async with aclosing(reader.read(self.log.topics.poison, live=True)) as records:
                    async for _ in records:
                        seen += 1
                        if seen >= count:
                            return
        if count > 0:
            try:
                await asyncio.wait_for(counted(), timeout)
            except TimeoutError:
                raise TimeoutError(f"{count} records on the poison topic did not appear within {timeout} s") from None
        return time.monotonic() - t0

    # -- the end --------------------------------------------------------------------------

    async def finish(self, outcome: Outcome) -> Replay:
        """Stop what runs, replay and audit the whole log, count poison; fill the common facts."""
        for name in sorted(self.alive(), key=lambda n: "worker" in n):  # agents drain first
            await self.stop(name)
        # A child that is neither killed nor stopped by the scenario and has exited crashed.
        exits = {**{n: p.returncode for n, p in self.cluster.processes.items() if n not in self.killed}, **self.exits}
        replay = await self.replay()
        report = audit(replay.pairs, replay.ledger)
        outcome.seconds = time.monotonic() - outcome.started
        outcome.tasks = report.tasks
        verdicts = Counter(v.outcome for _, v in replay.pairs)
        outcome.note(events=len(replay.pairs), verdicts=verdicts, states=report.states,
                     poison_on_events=replay.poison_read, poison_forwarded=len(replay.forwarded))
        outcome.expect("audit violations", [], [str(v) for v in report.violations[:10]])
        outcome.expect("processes that crashed or did not stop cleanly", {},
                       {name: code for name, code in exits.items() if code != 0})
        completions = Counter((e.queue, e.task_id) for e in replay.accepted(TaskCompleted))
        outcome.expect("tasks completed more than once", [], [k for k, n in completions.items() if n > 1])
        return replay

    async def replay(self) -> Replay:
        """Fold the `events` topic from offset 0 to its end with a fresh reader; read `poison` whole."""
        ledger, pairs, poison = Ledger(), [], 0
        async with EventLog(self.cluster.bootstrap, self.log.topics, tansu=self.cluster.tansu) as fresh:
            async for entry in fresh.read():
                if isinstance(entry, Poison):
                    poison += 1
                else:
                    pairs.append((entry.event, ledger.apply(entry.event)))
            forwarded = [((r.header("source-position") or b"").decode(), (r.header("poison-reason") or b"").decode())
                         async for r in fresh.reader.read(self.log.topics.poison)]
        return Replay(pairs, ledger, poison, forwarded)

    def worker_counts(self, name: str) -> Counter:
        """What a stopped worker said it processed (its last `processed:` line)."""
        lines = PROCESSED.findall(self.cluster.output(name))
        counts: Counter = Counter()
        for part in (lines[-1].split(", ") if lines and lines[-1] != "nothing" else []):
            key, _, value = part.rpartition(" ")
            counts[key] = int(value)
        return counts
