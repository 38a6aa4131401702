"""CPU microseconds per `evolve` step, by event type, over a synthetic queue stream.

    .venv/bin/python bench/fold.py [--tasks 2000] [--agents 16] [--repeat 5]

Stream: 16 agents join, then each task is submitted, assigned, started and completed;
every 10th task fails once (retryable) and is assigned again. Figures are medians over
`--repeat` folds of the whole stream, CPU time (time.process_time_ns). Not yet covered:
foldrows.step and decide (see the foldperf report).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskfold.core.fold import evolve  # noqa: E402
from taskfold.core.state import EMPTY  # noqa: E402
from taskfold.core.testing import Events  # noqa: E402


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


def main() -> None:
    """Fold the stream `--repeat` times and print the median µs per step by event type."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    events = stream(args.tasks, args.agents)
    per_type: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.repeat):
        state, spent, counts = EMPTY, defaultdict(int), defaultdict(int)
        for event in events:
            start = time.process_time_ns()
            state, _ = evolve(state, event)
            name = type(event).__name__
            spent[name] += time.process_time_ns() - start
            counts[name] += 1
        for name in spent:
            per_type[name].append(spent[name] / counts[name] / 1000)
        per_type["(all)"].append(sum(spent.values()) / len(events) / 1000)
    print(f"{'event':<20} {'µs/evolve (median)':>20}")
    for name, runs in sorted(per_type.items()):
        print(f"{name:<20} {statistics.median(runs):>20.1f}")


if __name__ == "__main__":
    main()
