"""The standard benchmark: one workload through taskfold and, optionally, Celery with Redis.

    .venv/bin/python bench/standard.py [--tasks 5000] [--agents 4] [--slots 1] [--handler echo|sleep5]
        [--mode burst|steady|both] [--rate 200 --seconds 25] [--runs 3] [--compare-celery]
        [--json-out FILE] [--markdown]

Per mode it starts a broker (as the tests pick one), the topics, one scheduler worker
(`--tick-ms 50`), a gateway (auth off) and the demo agents; each agent serves every run's
queue from the start, so the processes are the same across a mode's runs and no run sees
another's backlog. Tasks are appended with the Python log client: `burst` stamps and
appends them in batches as fast as it can, `steady` appends what is due every few ms at
`--rate` per second for `--seconds`. Each task's clock readings are the `occurred_at` of
its accepted TaskSubmitted (the wall clock at append), TaskStarted and TaskCompleted, read
back from the log. `--compare-celery` then runs the same workload on Celery's threads pool
with Redis (bench/celery_side.py), with the taskfold processes stopped, and prints the
ratios taskfold/celery. One JSON line per run goes to --json-out (and stdout).

Throughput is reported twice: `tasks_per_s` from the clock readings in the events (the
agents stamp start and completion), and `tasks_per_s_readback` from the first submit to
the moment the driver read the last completion back, so that a batching window cannot
hide delay. `cpu_ms_per_task` is the CPU of every process of the run (broker, worker,
gateway, agents, driver) per task; `machine_cpu_ms_per_task` counts the whole machine,
so it is only meaningful on a quiet one.

`--history 20000,50000` measures a mode's runs on ONE queue instead of one queue per run:
first fresh, then after that queue has completed 20,000 and then 50,000 tasks in all
(filler bursts through the whole system, not measured). Each JSON line says the history
it ran on; this is the throughput curve as batches pile up in the partition.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import Spec, Timing, measures, tasks  # noqa: E402

from taskfold.broker.topics import queue_partition  # noqa: E402
from taskfold.broker.harness import start_broker  # noqa: E402
from taskfold.broker.topics import TopicNames, ensure_topics  # noqa: E402
from taskfold.core.requests import submission  # noqa: E402
from taskfold.cli.cluster import LocalCluster, wait_for_ready_file  # noqa: E402
from taskfold.core.events import TaskAssigned, TaskCompleted, TaskStarted, TaskSubmitted  # noqa: E402
from taskfold.core.fold import Ledger  # noqa: E402
from taskfold.log.eventlog import EventLog, Recorded, entry_of  # noqa: E402

BURST_BATCH = 1000
READBACK_EVERY_S = 0.25
STEADY_STEP_S = 0.002
HANDLERS = {"echo": ("echo", "null", 0), "sleep5": ("sleep", '{"ms": 5}', 5)}  # task type, payload, Celery ms
MEASURES = ("completed", "tasks_per_s", "tasks_per_s_readback", "cpu_ms_per_task", "machine_cpu_ms_per_task", "broker_cpu_share",
            "start_p50_ms", "start_p95_ms", "start_p99_ms", "start_max_ms",
            "complete_p50_ms", "complete_p95_ms", "complete_p99_ms", "complete_max_ms", "priority_inversions",
            "waiting_inversions", "seat_inversions")


class Sampler:
    """Peak RSS and CPU seconds of named processes over one run, sampled in a thread."""

    def __init__(self, processes: dict[str, psutil.Process], every_s: float = 0.1) -> None:
        self.processes = processes
        self.every_s = every_s
        self.peak: dict[str, int] = {name: 0 for name in processes}
        self.cpu0 = {name: self._cpu(p) for name, p in processes.items()}
        self.cpu: dict[str, float] = {}
        self.machine0 = self._busy()
        self.machine_cpu_s = 0.0  # every process on the machine, ours or not
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        try:
            t = process.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def _sample(self) -> None:
        for name, process in self.processes.items():
            try:
                self.peak[name] = max(self.peak[name], process.memory_info().rss)
            except psutil.Error:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.cpu = {name: self._cpu(p) - self.cpu0[name] for name, p in self.processes.items()}
        self.machine_cpu_s = self._busy() - self.machine0

    def per_task(self, n: int) -> dict[str, float]:
        """CPU ms per task: all sampled processes together (the broker included), and machine-wide."""
        return {"cpu_ms_per_task": 1000 * sum(self.cpu.values()) / max(n, 1),
                "machine_cpu_ms_per_task": 1000 * self.machine_cpu_s / max(n, 1)}

    def report(self) -> dict[str, dict[str, float]]:
        """{process: {"peak_rss_mb", "cpu_s"}} for the run."""
        return {name: {"peak_rss_mb": round(self.peak[name] / 2**20, 1), "cpu_s": round(self.cpu.get(name, 0.0), 2)}
                for name in self.processes}


@dataclass
class Readback:
    """Follows the events topic, folds it, and keeps each task's accepted clock readings (ms)."""

    log: EventLog
    ledger: Ledger = field(default_factory=Ledger)
    submitted: dict[str, int] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)
    started_on: dict[str, str] = field(default_factory=dict)  # task -> agent of its accepted start
    finished: dict[str, int] = field(default_factory=dict)
    completed_in: dict[str, int] = field(default_factory=dict)  # queue -> tasks completed
    read_at: dict[str, int] = field(default_factory=dict)  # task -> wall ms when the driver read its completion
    assigned: dict[str, tuple[int, str]] = field(default_factory=dict)  # task -> (ms, agent) of the last assignment
    freed: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # agent -> (ms, task) of each completion
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None

    async def __aenter__(self) -> Readback:
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self) -> None:
        # The driver must not load the broker it measures: a Tansu Fetch costs time in
        # proportion to the batches already in the partition, so this reader takes what
        # has arrived at most every READBACK_EVERY_S instead of chasing every batch.
        topic = self.log.topics.events
        async with aclosing(self.log.reader.batches(topic, live=True, idle_ms=int(READBACK_EVERY_S * 1000))) as batches:
            async for batch in batches:
                for record in batch:
                    entry = entry_of(record)
                    if isinstance(entry, Recorded):
                        self._take(entry.event, entry.where)
                if batch:
                    self._changed.set()
                    await asyncio.sleep(READBACK_EVERY_S)

    def _take(self, event, where=None) -> None:  # noqa: ANN001
        if not self.ledger.apply(event, where).accepted:
            return
        if isinstance(event, TaskSubmitted):
            self.submitted[event.task_id] = event.occurred_at
        elif isinstance(event, TaskAssigned):
            self.assigned[event.task_id] = (event.occurred_at, event.agent_id)
        elif isinstance(event, TaskStarted):
            self.started.setdefault(event.task_id, event.occurred_at)
            self.started_on.setdefault(event.task_id, event.agent_id)
        elif isinstance(event, TaskCompleted):
            self.finished[event.task_id] = event.occurred_at
            self.read_at[event.task_id] = time.time_ns() // 1_000_000
            self.freed.setdefault(event.agent_id, []).append((event.occurred_at, event.task_id))
            self.completed_in[event.queue] = self.completed_in.get(event.queue, 0) + 1

    async def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Return once condition() holds; TimeoutError naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self._task.done():
                raise RuntimeError(f"the log reader stopped while waiting for {what}") from self._task.exception()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what} did not happen within {timeout} s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
            except TimeoutError:
                pass

    def hops(self, tag: str) -> dict[str, float]:
        """Median ms of the two hops of a busy cycle in one run (task ids starting with `tag`): a completion
        to the next assignment of that agent (the worker's hop) and an assignment to its start (the agent's hop)."""
        prefix = f"{tag}-"
        to_start = [self.started[t] - at for t, (at, _) in self.assigned.items()
                    if t.startswith(prefix) and t in self.started]
        next_assign = []
        by_agent: dict[str, list[int]] = {}
        for t, (at, agent) in self.assigned.items():
            if t.startswith(prefix):
                by_agent.setdefault(agent, []).append(at)
        for agent, assigns in by_agent.items():
            assigns.sort()
            for freed_at in (at for at, task in self.freed.get(agent, []) if task.startswith(prefix)):
                later = [a - freed_at for a in assigns if a >= freed_at]
                if later:
                    next_assign.append(min(later))
        med = lambda xs: float(statistics.median(xs)) if xs else float("nan")  # noqa: E731
        return {"hop_assign_to_start_ms": med(to_start), "hop_complete_to_next_assign_ms": med(next_assign)}

    def waiting(self, specs: list[Spec], first: str = "critical", last: str = "low") -> dict[str, int]:
        """Priority inversions that could have been avoided (priority_inversions also counts a low task
        that started before the critical one was even submitted, as in a burst submitted in batches):

        - waiting_inversions: (critical, low) pairs where the low task started after the critical one
          was submitted and before it started, on any agent;
        - seat_inversions: the same, counting only a low task started on the agent the critical one
          was assigned to, after that assignment (the rule of issue 12: none)."""
        crit = [s.task_id for s in specs if s.priority == first and s.task_id in self.started]
        lows = sorted((self.started[s.task_id], self.started_on[s.task_id]) for s in specs
                      if s.priority == last and s.task_id in self.started)
        waiting = seat = 0
        for task in crit:
            begin, end = self.submitted[task], self.started[task]
            at, agent = self.assigned.get(task, (end, ""))
            for started, on in lows:
                if started >= end:
                    break
                if started > begin:
                    waiting += 1
                    seat += on == agent and started > at
        return {"waiting_inversions": waiting, "seat_inversions": seat}

    def timings(self, specs: list[Spec]) -> list[Timing]:
        """Each spec's Timing in ns (the log's readings are ms)."""
        ms = 1_000_000
        return [Timing(s.task_id, s.priority, self.submitted[s.task_id] * ms, self.started[s.task_id] * ms,
                       self.finished[s.task_id] * ms)
                for s in specs if s.task_id in self.finished and s.task_id in self.started]


def run_specs(args: argparse.Namespace, mode: str) -> list[Spec]:
    """The workload of one run of a mode: --tasks for burst, rate × seconds for steady."""
    return tasks(args.tasks if mode == "burst" else int(args.rate * args.seconds))


def stamped_batch(queue: str, specs: list[Spec], args: argparse.Namespace, run_tag: str) -> list[TaskSubmitted]:
    """The TaskSubmitted events of `specs`, stamped with the wall clock now."""
    task_type, payload, _ = HANDLERS[args.handler]
    now = time.time_ns() // 1_000_000
    return [submission(queue, task_type, payload=payload, task_id=f"{run_tag}-{s.task_id}", priority=s.priority,
                       occurred_at=now, actor="bench") for s in specs]


async def submit(log: EventLog, queue: str, specs: list[Spec], args: argparse.Namespace, mode: str,
                 run_tag: str) -> float:
    """Append every task (burst: in big batches; steady: what is due, paced at --rate); seconds taken."""
    started = time.perf_counter()
    if mode == "burst":
        for i in range(0, len(specs), BURST_BATCH):
            await log.append(stamped_batch(queue, specs[i:i + BURST_BATCH], args, run_tag))
        return time.perf_counter() - started
    sent = 0
    while sent < len(specs):
        due = min(len(specs), int((time.perf_counter() - started) * args.rate) + 1)
        if due > sent:
            await log.append(stamped_batch(queue, specs[sent:due], args, run_tag))
            sent = due
        next_at = started + sent / args.rate
        await asyncio.sleep(max(0.0, min(STEADY_STEP_S, next_at - time.perf_counter())))
    return time.perf_counter() - started


def processes_of(cluster: LocalCluster) -> dict[str, psutil.Process]:
    """The cluster's children, the broker if it is our child (Tansu), and this driver."""
    out = {name: psutil.Process(p.pid) for name, p in cluster.processes.items()}
    ours = {p.pid for p in cluster.processes.values()}
    for child in psutil.Process().children():
        if child.pid not in ours and "tansu" in " ".join(child.cmdline()).lower():
            out["broker"] = child
    out["driver"] = psutil.Process()
    return out


async def taskfold_mode(args: argparse.Namespace, mode: str, emit: Callable[[dict], None]) -> list[dict]:
    """Every run of `mode` on one broker, worker, gateway and set of agents."""
    broker = start_broker()
    topics = TopicNames(f"bench.{uuid.uuid4().hex[:8]}.")
    state = Path(tempfile.mkdtemp(prefix="taskfold-standard-"))
    queues = run_queues(mode, 1 if args.history else args.runs, args.partitions)
    try:
        await ensure_topics(broker.bootstrap, topics, partitions=args.partitions)
        cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, state / "state", log_dir=state)
        try:
            async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log, Readback(log) as back:
                await start_cluster(cluster, args, queues, back, state)
                if args.history:
                    return await history_runs(args, mode, queues[0], log, back, processes_of(cluster), emit)
                results = []
                for i, queue in enumerate(queues):
                    result = await taskfold_run(args, mode, queue, log, back, processes_of(cluster))
                    result.update(run=i + 1, broker=broker.kind)
                    emit(result)
                    results.append(result)
                return results
        finally:
            cluster.stop_all(timeout=20)
    finally:
        broker.stop()


def run_queues(mode: str, runs: int, partitions: int) -> list[str]:
    """One queue per run, each on a partition of its own while there are enough.

    A queue's events share one partition, and Tansu's Fetch cost grows with the batches
    already in the partition (README, benchmarks), so a run must not inherit another's.
    """
    queues: list[str] = []
    used: set[int] = set()
    n = 0
    while len(queues) < runs:
        n += 1
        name = f"std-{mode}-{n}"
        placed = queue_partition(name, partitions)
        if placed not in used or len(used) >= partitions:
            queues.append(name)
            used.add(placed)
    return queues


async def start_cluster(cluster: LocalCluster, args: argparse.Namespace, queues: list[str], back: Readback,
                        state: Path) -> None:
    """Start the worker, the gateway and the agents; wait until the gateway serves and every agent is seated."""
    cluster.worker("worker-1", "--tick-ms", "50")
    ready = state / "gateway.ready.json"
    gateway = cluster.gateway("gateway", "--no-auth", "--fresh", "--port", "0", "--ready-file", str(ready))
    seats = [arg for q in queues for arg in ("-q", f"{q}={args.slots}")]
    for n in range(args.agents):
        cluster.agent(f"agent-{n + 1}", *seats)
    if await asyncio.to_thread(wait_for_ready_file, gateway, ready, 60) is None:
        raise RuntimeError(f"the gateway did not start:\n{cluster.output('gateway')[-3000:]}")
    await back.wait_for(lambda: all(len(back.ledger.state(q).members) == args.agents for q in queues), 60,
                        "every agent seated in every queue")
    # The worker's partitions assigned and its rows loaded: without this the first run also
    # measured faust's start-up (~5 s), which its first tasks waited out.
    deadline = time.monotonic() + 60
    while not re.search(r"ready: partitions \[\d", cluster.output("worker-1")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not get ready:\n{cluster.output('worker-1')[-3000:]}")
        await asyncio.sleep(0.1)  # polling a child's log: there is no event to wait on


async def history_runs(args: argparse.Namespace, mode: str, queue: str, log: EventLog, back: Readback,
                       processes: dict[str, psutil.Process], emit: Callable[[dict], None]) -> list[dict]:
    """--history: measured runs on ONE queue, fresh and then after that queue has completed each level of tasks.

    Tansu's Fetch cost grows with the batches already in the partition, so this is the
    throughput curve as history piles up; the filler tasks go through the whole system.
    """
    results = []
    for i, level in enumerate([0, *args.history]):
        filler = level - back.completed_in.get(queue, 0)
        if filler > 0:
            print(f"history: completing {filler:,} tasks in {queue} (unmeasured) ...", file=sys.stderr, flush=True)
            specs = tasks(filler)
            await submit(log, queue, specs, args, "burst", f"{queue}-fill{i}")
            await wait_completed(back, queue, len(specs), args)
        result = await taskfold_run(args, mode, queue, log, back, processes, tag=f"{queue}-run{i + 1}")
        result.update(run=i + 1, history=back.completed_in.get(queue, 0) - result["completed"])
        emit(result)
        results.append(result)
    return results


async def taskfold_run(args: argparse.Namespace, mode: str, queue: str, log: EventLog, back: Readback,
                       processes: dict[str, psutil.Process], tag: str | None = None) -> dict:
    """One run: submit the workload to `queue` (task ids start with `tag`), wait until all of it completed, measure."""
    specs = run_specs(args, mode)
    tag = tag or queue
    with Sampler(processes) as sampler:
        # Counted from before the first submit: in steady mode most tasks complete while
        # the rest are still being submitted.
        before = back.completed_in.get(queue, 0)
        submit_s = await submit(log, queue, specs, args, mode, tag)
        completed = await wait_completed(back, queue, len(specs), args, before)
    tagged = [Spec(f"{tag}-{s.task_id}", s.priority) for s in specs]
    result = {"system": "taskfold", "mode": mode, **common(args, len(specs)), "submit_s": round(submit_s, 2),
              "completed": completed, **rounded(measures(back.timings(tagged))), "processes": sampler.report()}
    result.update(back.hops(tag))
    result.update(back.waiting(tagged))
    result.update(rounded({**sampler.per_task(len(specs)), **readback_rate(back, tagged)}))
    cpu = {name: p["cpu_s"] for name, p in result["processes"].items()}
    result["broker_cpu_share"] = round(cpu.get("broker", 0.0) / max(sum(cpu.values()), 1e-9), 3)
    result["completed_without_accepted_start"] = sum(1 for t in back.finished if t.startswith(f"{tag}-")
                                                     and t not in back.started)
    if completed < len(specs):
        result["not_completed"] = sorted(s.task_id for s in tagged if s.task_id not in back.finished)[:20]
    return result


def readback_rate(back: Readback, tagged: list[Spec]) -> dict[str, float]:
    """Tasks/s from the first submit to the driver reading the last completion back (batching cannot hide delay here)."""
    ids = [s.task_id for s in tagged if s.task_id in back.read_at and s.task_id in back.submitted]
    if not ids:
        return {}
    span_ms = max(back.read_at[t] for t in ids) - min(back.submitted[t] for t in ids)
    return {"tasks_per_s_readback": len(ids) / max(span_ms / 1000, 1e-3)}


async def wait_completed(back: Readback, queue: str, n: int, args: argparse.Namespace, before: int | None = None) -> int:
    """Wait until n more tasks of `queue` than `before` (default: now) completed, or --stall-s pass without
    one more, or --timeout; how many did."""
    before = back.completed_in.get(queue, 0) if before is None else before
    count = lambda: back.completed_in.get(queue, 0) - before  # noqa: E731
    deadline = time.monotonic() + args.timeout
    while count() < n:
        seen, left = count(), deadline - time.monotonic()
        try:
            await back.wait_for(lambda: count() >= n, max(0.1, min(args.stall_s, left)), f"{n} tasks of {queue}")
        except TimeoutError:
            if count() == seen or time.monotonic() >= deadline:
                print(f"warning: {queue}: {count()} of {n} tasks completed; stopped waiting "
                      f"({'no progress for %g s' % args.stall_s if count() == seen else 'timeout'})",
                      file=sys.stderr, flush=True)
                break
    return count()


def celery_mode(args: argparse.Namespace, mode: str, emit: Callable[[dict], None]) -> list[dict]:
    """Every run of `mode` on one Redis and set of Celery workers."""
    from celery_side import CeleryRig

    rig = CeleryRig(args.agents, args.slots)
    try:
        results = []
        for i in range(args.runs):
            specs = run_specs(args, mode)
            processes = {**rig.processes(), "driver": psutil.Process()}
            with Sampler(processes) as sampler:
                timings = rig.run(specs, HANDLERS[args.handler][2], args.rate if mode == "steady" else None)
            result = {"system": "celery", "mode": mode, **common(args, len(specs)), "completed": len(timings),
                      **rounded(measures(timings)), **rounded(sampler.per_task(len(specs))),
                      "processes": sampler.report(), "run": i + 1}
            emit(result)
            results.append(result)
        return results
    finally:
        rig.stop()


def common(args: argparse.Namespace, n: int) -> dict:
    return {"tasks": n, "agents": args.agents, "slots": args.slots, "handler": args.handler,
            "cpus": os.cpu_count(), "python": platform.python_version()}


def rounded(values: dict) -> dict:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in values.items()}


def spread(results: list[dict], get: Callable[[dict], float]) -> tuple[float, float, float]:
    """(min, median, max) of one figure over runs."""
    values = [get(r) for r in results]
    return min(values), statistics.median(values), max(values)


def fmt(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:g}" if isinstance(v, int) or v >= 100 else f"{v:.2f}".rstrip("0").rstrip(".")
                      for v in values)


def summary_rows(results: list[dict]) -> list[tuple[str, str]]:
    """(figure, "min / median / max") rows for one system and mode."""
    rows = [(name, fmt(spread(results, lambda r, n=name: r[n]))) for name in MEASURES if name in results[0]]
    rows.append(("critical_before_low", f"{sum(r['critical_before_low'] for r in results)}/{len(results)} runs"))
    for name in results[0]["processes"]:
        rows.append((f"{name} peak RSS MB", fmt(spread(results, lambda r, n=name: r["processes"][n]["peak_rss_mb"]))))
        rows.append((f"{name} CPU s", fmt(spread(results, lambda r, n=name: r["processes"][n]["cpu_s"]))))
    return rows


def ratios(ours: list[dict], theirs: list[dict]) -> dict[str, float]:
    """taskfold/celery of the median tasks/s and p99 latencies."""
    out = {}
    for name in ("tasks_per_s", "start_p99_ms", "complete_p99_ms"):
        a, b = spread(ours, lambda r, n=name: r[n])[1], spread(theirs, lambda r, n=name: r[n])[1]
        out[name] = round(a / b, 3) if b else float("inf")
    return out


def render(by_key: dict[tuple[str, str], list[dict]], markdown: bool) -> str:
    """One table per mode: figures (min / median / max) per system, and the ratio if Celery ran."""
    out = []
    for mode in dict.fromkeys(m for _, m in by_key):
        systems = [s for s, m in by_key if m == mode]
        columns = {s: dict(summary_rows(by_key[(s, mode)])) for s in systems}
        names = list(dict.fromkeys(n for s in systems for n in columns[s]))
        header = ["figure"] + [f"{s} (min / median / max)" for s in systems]
        lines = [[n] + [columns[s].get(n, "-") for s in systems] for n in names]
        out.append(f"\n{mode}: {by_key[(systems[0], mode)][0]['tasks']} tasks, {len(by_key[(systems[0], mode)])} runs")
        out.append(table(header, lines, markdown))
        if "celery" in systems and "taskfold" in systems:
            r = ratios(by_key[("taskfold", mode)], by_key[("celery", mode)])
            out.append(f"taskfold/celery (medians): tasks/s {r['tasks_per_s']}, "
                       f"submit→start p99 {r['start_p99_ms']}, submit→complete p99 {r['complete_p99_ms']}")
    return "\n".join(out)


def table(header: list[str], lines: list[list[str]], markdown: bool) -> str:
    if markdown:
        rows = [header, ["---"] + ["---:"] * (len(header) - 1), *lines]
        return "\n".join("| " + " | ".join(row) + " |" for row in rows)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in [header, *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per burst run")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--slots", type=int, default=1, help="slots per agent")
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="echo")
    parser.add_argument("--mode", choices=("burst", "steady", "both"), default="both")
    parser.add_argument("--rate", type=float, default=200.0, help="steady: tasks per second")
    parser.add_argument("--seconds", type=float, default=25.0, help="steady: how long to submit")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode")
    parser.add_argument("--compare-celery", action="store_true", help="also run the workload on Celery with Redis")
    parser.add_argument("--json-out", type=Path, help="append one JSON line per run here")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=600, help="seconds a run may take to complete")
    parser.add_argument("--history", type=lambda v: [int(x) for x in v.split(",")], default=[],
                        help="e.g. 20000,50000: measure on one queue fresh, then after it completed that many tasks")
    parser.add_argument("--stall-s", type=float, default=30,
                        help="stop waiting for a run after this many seconds without a completion")
    args = parser.parse_args()
    modes = ("burst", "steady") if args.mode == "both" else (args.mode,)
    sink = args.json_out.open("a") if args.json_out else None

    def emit(result: dict) -> None:
        line = json.dumps(result)
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()

    by_key: dict[tuple[str, str], list[dict]] = {}
    for mode in modes:
        by_key[("taskfold", mode)] = asyncio.run(taskfold_mode(args, mode, emit))
        if args.compare_celery:
            by_key[("celery", mode)] = celery_mode(args, mode, emit)
    print(render(by_key, args.markdown))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average before the last run's end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
