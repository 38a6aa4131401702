"""CPU microseconds per fold step, by event type, over a synthetic queue stream.

    .venv/bin/python bench/fold.py [--tasks 2000] [--agents 16] [--repeat 5] [--decides 200]

Stream: `--agents` agents join (4 slots each), then each task is submitted, assigned,
started and completed; every 10th task fails once (retryable) and is assigned again.
Three figures per event type, medians over `--repeat` passes over the whole stream, CPU
time (time.process_time_ns), so other processes on a shared machine count little:

* `evolve`: the fold step everyone runs (`taskfold.core.fold.evolve`);
* `step`: the scheduler's step, `foldrows.slimmed(foldrows.step(...))`: evolve, the
  fleet's observe, and the rows the event changed, JSON-encoded;
* `decide`: one decide round that assigns one task with `--agents` seats (the queue
  holds `--tasks` queued tasks, one slot is free), per call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskfold.core import foldrows  # noqa: E402
from taskfold.core.fold import evolve  # noqa: E402
from taskfold.core.scheduling.decide import decide  # noqa: E402
from taskfold.core.scheduling.line import Line  # noqa: E402
from taskfold.core.scheduling.model import QueuePolicy  # noqa: E402
from taskfold.core.state import EMPTY  # noqa: E402
from taskfold.core.testing import Events  # noqa: E402

POLICY = QueuePolicy()


def stream(tasks: int, agents: int) -> list:
    """A realistic queue log: joins, then submit/assign/start/complete with some retries."""
    ev = Events()
    out = [ev.join(f"agent-{a:02d}", slots=4) for a in range(agents)]
    for i in range(tasks):
        task, agent = f"task-{i}", f"agent-{i % agents:02d}"
        out += [ev.submit(task), ev.assign(task, agent), ev.start(task, agent)]
        if i % 10 == 0:
            out.append(ev.fail(task, agent))
            ev.now += 600_000  # past the retry backoff
            out += [ev.assign(task, agent, attempt=2), ev.start(task, agent, attempt=2),
                    ev.complete(task, agent, attempt=2)]
        else:
            out.append(ev.complete(task, agent))
    return out


def per_type(events: list, repeat: int, apply) -> dict[str, float]:
    """Median µs per call of `apply(state, event) -> state` by event type, and "(all)"."""
    runs: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeat):
        state, spent, counts = None, defaultdict(int), defaultdict(int)
        for event in events:
            start = time.process_time_ns()
            state = apply(state, event)
            name = type(event).__name__
            spent[name] += time.process_time_ns() - start
            counts[name] += 1
        for name in spent:
            runs[name].append(spent[name] / counts[name] / 1000)
        runs["(all)"].append(sum(spent.values()) / len(events) / 1000)
    return {name: statistics.median(values) for name, values in runs.items()}


def evolve_step(state, event):
    """The fold's step alone."""
    return evolve(state or EMPTY, event)[0]


def scheduler_step(queue, event):
    """The scheduler's step: fold, fleet, slim, and the rows to write, encoded."""
    done = foldrows.slimmed(foldrows.step(queue or foldrows.Queue(), event, POLICY))
    assert done.writes is not None  # the rows are encoded when first asked for
    return done.after


def decide_us(tasks: int, agents: int, calls: int, repeat: int, ordered: bool = False) -> float:
    """Median µs of a decide round that places one task among `agents` seats, one slot free;
    `ordered`: with the waiting index kept in order (`Line`), as the worker keeps it."""
    ev = Events()
    events = [ev.join(f"agent-{a:02d}", slots=1) for a in range(agents)]
    events += [ev.submit(f"task-{i}") for i in range(tasks)]
    events += [ev.assign(f"task-{i}", f"agent-{i:02d}") for i in range(agents - 1)]
    state = EMPTY
    for event in events:
        state = evolve(state, event)[0]
    fleet = foldrows.Queue(state).fleet
    beats = {f"agent-{a:02d}": ev.now for a in range(agents)}
    line = Line(state.waiting) if ordered else None
    runs = []
    for _ in range(repeat):
        start = time.process_time_ns()
        for _ in range(calls):
            made = decide(state, fleet, POLICY, queue="q", now_ms=ev.now, heartbeats=beats, line=line)
        runs.append((time.process_time_ns() - start) / calls / 1000)
        assert len(made) == 1, made
    return statistics.median(runs)


def main() -> None:
    """Print the median µs per evolve and per scheduler step by event type, and per decide."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--decides", type=int, default=200, help="decide calls per run")
    args = parser.parse_args()
    events = stream(args.tasks, args.agents)
    folded, stepped = per_type(events, args.repeat, evolve_step), per_type(events, args.repeat, scheduler_step)
    print(f"{'event':<20} {'µs/evolve':>10} {'µs/step':>10}   (medians of {args.repeat} runs, CPU time)")
    for name in sorted(folded):
        print(f"{name:<20} {folded[name]:>10.1f} {stepped[name]:>10.1f}")
    for ordered, how in ((False, "ordering the index"), (True, "with a kept Line")):
        print(f"decide, {args.agents} seats, 1 free, {args.tasks} queued, {how}: "
              f"{decide_us(args.tasks, args.agents, args.decides, args.repeat, ordered):.1f} µs per round")


if __name__ == "__main__":
    main()
