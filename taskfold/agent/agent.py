"""The Agent: join queues, heartbeat, fold the log, run handlers for accepted assignments, drain.

`run()` works in these steps:

1. Resolve the broker and find the `events` partitions its queues hash to.
2. Fold those partitions from the beginning with the shared fold (taskfold.core.fold.Ledger),
   acting on nothing, so it knows what was accepted; then resume attempts it still holds
   from an earlier run (their reports carry derived ids, so repeats fold as duplicates).
3. Append AgentJoined once per queue (keyed by that queue), start heartbeating.
4. Follow the partitions live: every folded event goes through `decide.react`, which
   starts a handler for each accepted TaskAssigned to this agent, stops cancelled or
   revoked ones, and acknowledges cancels that won a race against a completion.
   With every heartbeat, attempts the fold says this agent holds but that neither run
   nor were reported are started again (`_reconcile`): a start or report that could not
   be appended must not leave a task held for as long as the agent heartbeats. A
   scheduler that declares this live agent lost (AgentLeft lost) gets a new AgentJoined.
5. On `stop()` or SIGTERM, drain: see `Agent._drain`. The stop fits in a budget of
   drain_timeout whatever the broker does (taskfold.agent.stopping); a second signal
   skips the drain.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import aclosing

from taskfold.agent.attempts import Handler, TaskContext, run_attempt
from taskfold.broker.connection import connect
from taskfold.agent.decide import AcknowledgeCancel, Action, HandBack, Rejoin, Run, Stop, held_attempt, react, resume
from taskfold.agent.process import MAX_SLOTS, queue_slots, signal_handlers
from taskfold.agent.progress import ProgressStream
from taskfold.core.reports import AttemptEnd, AttemptKey, Reporter, error_text
from taskfold.agent.results import DependencyResults
from taskfold.broker.topics import partitions_of
from taskfold.agent.stopping import BEAT_TIMEOUT_S, CALL_S, MIN_STOP_S, StopBudget, backoff, bounded
from taskfold.broker.topics import TopicNames
from taskfold.core.events import Event, LeaveReason
from taskfold.core.fold import Ledger
from taskfold.log.coalesce import append_busy_window_s, append_window_s
from taskfold.log.eventlog import EventLog, Poison, entry_of
from taskfold.log.records import ConsumedRecord, RawRecord
from taskfold.core.state import Task
from taskfold.log.wire import encode_record

log = logging.getLogger(__name__)


class Agent:
    """An agent serving queues with a number of slots each; register handlers, then `await run()`."""

    def __init__(
        self, agent_id: str, queues: Mapping[str, int] | Iterable[str], *,
        labels: Mapping[str, str] | None = None, capabilities: Iterable[str] = (),
        heartbeat_interval: float = 1.0, drain_timeout: float = 30.0, cancel_grace: float = 5.0,
        topics: TopicNames | None = None, tansu: bool | None = None, actor: str | None = None,
        prefetch: int = 0,
    ) -> None:
        if not agent_id:
            raise ValueError("agent_id must not be empty")
        self.agent_id = agent_id
        self.slots = queue_slots(queues)
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= MAX_SLOTS:
            raise ValueError(f"prefetch must be an int from 0 to {MAX_SLOTS}, not {prefetch!r}")
        self.prefetch = prefetch  # per queue: attempts held ahead, beyond the slots (AgentJoined v2)
        self._held: dict[AttemptKey, Task] = {}  # accepted, not started: run highest priority first
        self._seen: dict[str, int] = {}  # queue -> offset of its last record folded (TaskStarted.seen)
        self.labels, self.capabilities = dict(labels or {}), sorted(set(capabilities))
        self.heartbeat_interval, self.drain_timeout, self.cancel_grace = heartbeat_interval, drain_timeout, cancel_grace
        self.topics, self.tansu = topics, tansu
        self.handlers: dict[str, Handler] = {}
        self.ready = asyncio.Event()  # set once caught up and joined
        self.stats: Counter[str] = Counter()
        self.reporter = Reporter(agent_id, actor)
        self.ledger = Ledger()
        self.results = DependencyResults(self.ledger)  # what handlers get of their dependencies
        self.draining = False
        self._attempts: dict[AttemptKey, TaskContext] = {}
        self._reported: set[AttemptKey] = set()  # outcome appended, not yet read back
        self._jobs: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._log: EventLog | None = None
        self._progress: ProgressStream | None = None
        self._run_task: asyncio.Task | None = None
        self._budget: StopBudget | None = None  # set when the stop begins
        self._bootstrap = ""

    def handler(self, task_type: str):  # noqa: ANN201 (a decorator)
        """Decorator: register an `async def f(task: TaskContext)` for a task type."""
        def register(fn: Handler) -> Handler:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"handler for {task_type!r} must be an async function")
            self.handlers[task_type] = fn
            return fn
        return register

    def stop(self) -> None:
        """Start draining; `run()` returns once drained, within max(drain_timeout, 2 s). Call it from the agent's loop."""
        self._stopping.set()

    def _on_signal(self) -> None:
        # First signal drains; a second one means "now": tear down without a drain.
        if self._stopping.is_set() and self._run_task is not None:
            log.warning("second signal: stopping %s now, without a drain", self.agent_id)
            self._budget = StopBudget.at_once(asyncio.get_running_loop().time())
            self._run_task.cancel()
        elif not self._stopping.is_set():
            log.warning("stopping %s: draining for up to %.1f s; a second signal stops it at once",
                        self.agent_id, max(self.drain_timeout, MIN_STOP_S))
        self.stop()

    def load(self) -> dict[str, int]:
        """Attempts running now, per queue."""
        counts = Counter(key.queue for key in self._attempts)
        return {queue: counts.get(queue, 0) for queue in self.slots}

    async def run(self, bootstrap: str | None = None, *, handle_signals: bool = True) -> None:
        """Serve until `stop()` (or SIGTERM/SIGINT when handle_signals; a second one skips the drain), then drain and leave."""
        self._run_task = asyncio.current_task()
        target = await connect(bootstrap, self.topics, self.tansu)
        self.topics, self._bootstrap = target.topics, target.bootstrap
        self._log = EventLog(target.bootstrap, target.topics, tansu=target.tansu, window_s=append_window_s(),
                             busy_window_s=append_busy_window_s())
        self.results.connect(lambda: EventLog(target.bootstrap, target.topics, tansu=target.tansu))
        try:
            with signal_handlers(self._on_signal, handle_signals):
                await self._serve(self._log)
        finally:
            await self._close(self._log)

    async def _close(self, log_: EventLog) -> None:
        """Close the clients within the stop's budget: a flush a dead broker never acknowledges must not hold the exit."""
        until = self._budget.close_by if self._budget else asyncio.get_running_loop().time() + CALL_S
        await bounded(log_.reader.stop(), until, "closing the log reader")
        await bounded(log_.writer.stop(), until, "closing the log writer (flushing what is unsent)")
        await bounded(self.results.close(), until, "closing the dependency results reader")

    async def _serve(self, log_: EventLog) -> None:
        self._progress = ProgressStream(log_.writer, log_.topics.progress)
        stopping = asyncio.create_task(self._stopping.wait())
        starting = asyncio.create_task(self._start_up(log_))
        background = [asyncio.create_task(self._progress.run()), stopping, starting]
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                # A broker that does not answer holds start-up; stopping must not wait for it.
                log.warning("%s stopped while starting up, before it joined", self.agent_id)
                return
            partitions, start = starting.result()
            follow = asyncio.create_task(self._follow(log_, partitions, start))
            background += [follow, asyncio.create_task(self._heartbeats())]
            self.ready.set()
            await asyncio.wait({follow, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if follow.done():
                follow.result()  # the log went away: raise, without a drain that could not be written
            await self._drain(log_, follow)
        finally:
            for ctx in list(self._attempts.values()):
                ctx.stop("revoked")  # torn down without a drain: the lease will give them back
            for task in background + list(self._jobs):
                task.cancel()
            until = self._budget.close_by if self._budget else asyncio.get_running_loop().time() + CALL_S
            await bounded(asyncio.gather(*background, *self._jobs, return_exceptions=True), until,
                          "stopping the agent's tasks")

    async def _start_up(self, log_: EventLog) -> tuple[list[int], dict[int, int]]:
        """Connect, fold history, resume held attempts, join: the partitions to follow, and from where."""
        await log_.start()
        partitions = list(partitions_of(self.slots, len(await log_.reader.partitions(log_.topics.events))))
        start = await self._catch_up(log_, partitions)
        for queue in self.slots:
            self._act_all(resume(self.ledger.state(queue), self.agent_id, self._attempts, self.draining))
        await log_.append([self.reporter.joined(q, n, self.capabilities, self.labels, self.prefetch)
                           for q, n in self.slots.items()])
        return partitions, start

    async def _catch_up(self, log_: EventLog, partitions: list[int]) -> dict[int, int]:
        """Fold history up to the current end, acting on nothing; return where to follow from."""
        start: dict[int, int] = {}
        async with aclosing(log_.reader.read(log_.topics.events, partitions, to_end=True)) as records:
            async for record in records:
                start[record.partition] = record.offset + 1
                self._fold(record)
        return start

    async def _follow(self, log_: EventLog, partitions: list[int], start: dict[int, int]) -> None:
        stream = log_.reader.batches(log_.topics.events, partitions, start=start, live=True)
        async with aclosing(stream) as fetches:
            async for records in fetches:
                # A whole fetch is folded before anything held starts: of a low and a critical
                # assignment read together, the critical one runs first.
                for record in records:
                    self._act_all(self._fold(record), start_held=False)
                self._start_held({k.queue for k in self._held})

    def _fold(self, record: ConsumedRecord) -> list[Action]:
        """Fold one record of our partitions; return what it calls for."""
        if record.key not in self.slots:
            return []  # another queue that hashes to the same partition
        self._seen[record.key] = record.offset
        entry = entry_of(record)
        if isinstance(entry, Poison):
            self.stats["poison"] += 1
            log.warning("skipping undecodable record at %s: %s", entry.position, entry.reason)
            return []
        event = entry.event
        if event.queue not in self.slots:
            return []
        verdict = self.ledger.apply(event, entry.where)
        self.results.note(event, verdict)
        state = self.ledger.state(event.queue)
        return react(state, event, verdict, self.agent_id, self._attempts.keys() | self._held.keys(), self.draining)

    def _act_all(self, actions: list[Action], start_held: bool = True) -> None:
        """Carry the actions out; held attempts start after all of them (`start_held`), or
        when the caller says so (after a whole fetch)."""
        runs: set[str] = set()
        for action in actions:
            match action:
                case Run(key, task):
                    self._held[key] = task
                    runs.add(key.queue)
                case HandBack(key, task):
                    self._spawn(self._report(self.reporter.handed_back(key, task.correlation_id), "handed_back"))
                case AcknowledgeCancel(key, task):
                    self._spawn(self._report(self.reporter.cancelled(key, task.correlation_id), "cancelled"))
                case Stop(key, reason) if key in self._held:
                    task = self._held.pop(key)  # taken away before it started: dropped, never run
                    if reason == "cancel":
                        self._spawn(self._report(self.reporter.cancelled(key, task.correlation_id), "cancelled"))
                case Stop(key, reason):
                    if key in self._attempts:
                        self._attempts[key].stop(reason)
                case Rejoin(queue):
                    log.warning("declared lost in %s while alive: joining again", queue)
                    joined = self.reporter.joined(queue, self.slots[queue], self.capabilities, self.labels,
                                                  self.prefetch)
                    self._spawn(self._report(joined, "rejoined"))
        if start_held:
            self._start_held(runs)

    def _start_held(self, queues: set[str]) -> None:
        for queue in sorted(queues):
            self._run_held(queue)

    def _run_held(self, queue: str, freed_by: asyncio.Future | None = None) -> None:
        """Start held attempts of the queue while fewer than its slots run: highest priority, then arrival.

        `freed_by` is the submitted, maybe unacknowledged, outcome that freed a slot: the
        first attempt started goes `after` it, so the log never shows that slot running twice.
        """
        while sum(1 for k in self._attempts if k.queue == queue) < self.slots[queue]:
            held = [k for k in self._held if k.queue == queue]
            if not held:
                return
            key = min(held, key=lambda k: (self._held[k].priority.rank, self._held[k].arrival, k.task_id))
            # A settled outcome needs no chain; a failed one must not refuse every later start.
            after = freed_by if freed_by is not None and not freed_by.done() else None
            self._start(key, self._held.pop(key), after)
            freed_by = None

    def _hand_back_held(self) -> None:
        """Draining: give back every attempt held and not started, at once and uncharged."""
        for key, task in sorted(self._held.items()):
            self._spawn(self._report(self.reporter.handed_back(key, task.correlation_id), "handed_back"))
        self._held.clear()

    def _start(self, key: AttemptKey, task: Task, after: asyncio.Future | None = None) -> None:
        ctx = TaskContext(key, task, self.agent_id, self.reporter, self._progress.put,  # type: ignore[union-attr]
                          self.results)
        self._attempts[key] = ctx
        # What it had read when it chose this attempt: the audit judges its priority by that.
        self._spawn(self._attempt(ctx, task, after, self._seen.get(key.queue)))

    def _spawn(self, coro) -> None:  # noqa: ANN001
        job = asyncio.create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._job_done)

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            # A hand-back or acknowledgement that could not be appended; the lease covers it.
            self.stats["report_errors"] += 1
            log.error("could not append a report: %s", job.exception())

    async def _attempt(self, ctx: TaskContext, task: Task, after: asyncio.Future | None = None,
                       seen: int | None = None) -> None:
        """Report start (`after` the outcome that freed the slot), run the handler, flush its progress, report the outcome."""
        key, correlation, start, outcome_sent = ctx.key, task.correlation_id, None, None
        try:
            handler = self.handlers.get(task.task_type)
            if handler is None:
                known = ", ".join(sorted(self.handlers)) or "none"
                outcome = AttemptEnd("failed", retryable=False, error=(
                    f"no handler for task type {task.task_type!r} on agent {self.agent_id} (it handles: {known})"))
            else:
                if ctx.stop_reason is None:
                    # Submitted, not awaited: it waits out the report window
                    # (taskfold.log.coalesce), so a quick attempt's start and outcome, and
                    # other attempts' reports, share one produce: one batch. Batches are
                    # what a Tansu Fetch scans. The outcome goes `after` it: it never lands
                    # without its start, and a start that failed fails the report.
                    start = self._log.submit([self.reporter.started(key, correlation, seen)],  # type: ignore[union-attr]
                                             after=after)
                    log.info("started %s (%s)", key, task.task_type)
                outcome = await run_attempt(handler, ctx, grace_s=self.cancel_grace)
            await self._progress.flush()  # type: ignore[union-attr]
            report = self.reporter.outcome(key, outcome, correlation)  # None: revoked, not reported
            outcome_sent = self._log.submit([report] if report is not None else [],  # type: ignore[union-attr]
                                            after=start)
            # The slot frees once the outcome is handed to the log, not once it is
            # acknowledged: the next start follows it in the same round or a later one.
            self._reported.add(key)
            # An outcome behind a start already refused will be refused too: chaining the
            # next start to it would refuse that one as well, and so on down the held queue.
            self._free(key, None if start is not None and _failed(start) else outcome_sent)
            await outcome_sent
            self.stats[outcome.kind] += 1
            log.info("%s %s", outcome.kind, key.task_id if report is not None else f"{key} (revoked, not reported)")
        except Exception:
            # The log is unreachable: the lease will expire and the task go back.
            self._reported.discard(key)  # run again by `_reconcile` if the log still says we hold it
            self.stats["report_errors"] += 1
            log.exception("attempt %s could not be reported", key)
        finally:
            self._free(key, outcome_sent)

    def _free(self, key: AttemptKey, outcome: asyncio.Future | None) -> None:
        """The attempt no longer takes a slot: start the next one held, after its outcome."""
        if self._attempts.pop(key, None) is not None and not self.draining:
            self._run_held(key.queue, outcome)

    async def _report(self, event: Event, counter: str) -> None:
        await self._log.append([event])  # type: ignore[union-attr]
        self.stats[counter] += 1
        log.info("%s %s", counter, event.task_id)

    async def _heartbeats(self) -> None:
        failures = 0
        while True:
            failure = await self._beat()
            if failure is None:
                if failures:
                    log.warning("broker %s answers again (after %d failed heartbeats)", self._bootstrap, failures)
                failures, delay = 0, self.heartbeat_interval
            else:
                # One line per attempt, further apart each time: a broker that is gone
                # must not fill the log (aiokafka's own repeats are collapsed elsewhere).
                failures += 1
                delay = backoff(failures, self.heartbeat_interval)
                log.warning("broker %s unreachable (%s); retrying in %.1f s", self._bootstrap, failure, delay)
            self._reconcile()
            await asyncio.sleep(delay)

    def _reconcile(self) -> None:
        """Run again what the fold says this agent holds but nothing runs or has reported."""
        self._reported = {key for key in self._reported
                          if held_attempt(self.ledger.state(key.queue).task(key.task_id), self.agent_id) == key}
        busy = set(self._attempts) | self._reported | set(self._held)
        for queue in self.slots:
            # Only runs: a missed hand-back or cancel acknowledgement is left to the
            # scheduler's start_within_ms and lease rules, and must not repeat every beat.
            runs = [a for a in resume(self.ledger.state(queue), self.agent_id, busy, self.draining)
                    if isinstance(a, Run)]
            for action in runs:
                self.stats["reconciled"] += 1
                log.warning("attempt %s is held by %s in the log but was not running: starting it",
                            action.key, self.agent_id)
            self._act_all(runs)

    async def _beat(self, timeout: float = BEAT_TIMEOUT_S) -> str | None:
        """Append one heartbeat; None once acknowledged, else why it was not (never raises)."""
        beat = self.reporter.heartbeat(self.slots, self.load(), self.draining)
        value, headers = encode_record(beat)
        record = RawRecord(key=self.agent_id, value=value, headers=headers)
        try:
            await asyncio.wait_for(self._log.writer.append(self._log.topics.heartbeats, [record]),  # type: ignore[union-attr]
                                   timeout)
        except TimeoutError:
            return f"no acknowledgement within {timeout:.1f} s"
        except Exception as exc:  # a missed beat is not fatal; the next one may land
            return error_text(exc)
        self.stats["heartbeats"] += 1
        return None

    async def _drain(self, log_: EventLog, follow: asyncio.Task[None]) -> None:
        """Drain: refuse new work, let running attempts finish, hand back the rest, leave.

        Every step ends by its deadline in the stop's budget (StopBudget), whatever the
        broker does; an append that runs out is given up on (the lease covers it).
        1. Mark draining and heartbeat at once, so schedulers stop choosing this agent;
           assignments accepted from now on are handed back (TaskFailed, retryable).
        2. Wait for running attempts to finish and report, until `attempts_by`.
        3. Stop the rest: each reports TaskFailed (retryable) "agent draining", until `reports_by`.
        4. Stop following, wait for pending reports, append AgentLeft(drained) per queue,
           until `leave_by`; `run()` then closes the clients until `close_by`.
        """
        budget = self._budget = StopBudget.starting(asyncio.get_running_loop().time(), self.drain_timeout)
        self.draining = True
        self._hand_back_held()
        failure = await self._beat(min(CALL_S, budget.attempts_by - asyncio.get_running_loop().time()))
        if failure is not None:
            log.warning("the draining heartbeat was not appended (%s); stopping anyway", failure)
        await self._wait_attempts(budget.attempts_by)
        for ctx in list(self._attempts.values()):
            ctx.stop("drain")
        await self._wait_attempts(budget.reports_by)
        follow.cancel()
        await bounded(asyncio.gather(follow, return_exceptions=True), budget.reports_by, "stopping the log tail")
        await bounded(asyncio.gather(*self._jobs, return_exceptions=True), budget.reports_by, "pending reports")
        left = [self.reporter.left(q, LeaveReason.drained) for q in self.slots]
        if await bounded(log_.append(left), budget.leave_by, "appending AgentLeft"):
            self.stats["left"] += len(left)
        else:
            self.stats["report_errors"] += 1

    async def _wait_attempts(self, deadline: float) -> None:
        """Wait until no attempt runs, or loop time `deadline`."""
        loop = asyncio.get_running_loop()
        while self._attempts and loop.time() < deadline:
            jobs = set(self._jobs)
            if not jobs:
                break
            await asyncio.wait(jobs, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED)


def _failed(append: asyncio.Future) -> bool:
    """Whether a submitted append has already failed (or was cancelled)."""
    return append.done() and (append.cancelled() or append.exception() is not None)
