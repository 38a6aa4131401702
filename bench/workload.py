"""The standard benchmark's workload and its measures, shared by the taskfold and Celery runs."""

from __future__ import annotations

import random
from dataclasses import dataclass

PRIORITIES = ("critical", "high", "medium", "low")


@dataclass(frozen=True, slots=True)
class Spec:
    task_id: str
    priority: str


@dataclass(frozen=True, slots=True)
class Timing:
    """One task's clock readings, in nanoseconds since the epoch."""

    task_id: str
    priority: str
    submitted: int
    started: int
    finished: int


def tasks(n: int, seed: int = 7) -> list[Spec]:
    """n tasks, a quarter per priority, in a shuffled (seeded) submission order."""
    specs = [Spec(f"t{i:06d}", PRIORITIES[i % 4]) for i in range(n)]
    random.Random(seed).shuffle(specs)
    return specs


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def inversions(timings: list[Timing], first: str = "critical", last: str = "low") -> int:
    """How many (first, last) pairs started in the wrong order: 0 means strict priority."""
    ones = sorted(t.started for t in timings if t.priority == first)
    others = sorted(t.started for t in timings if t.priority == last)
    count, j = 0, 0
    for started in ones:  # for each critical task, the low tasks that started before it
        while j < len(others) and others[j] < started:
            j += 1
        count += j
    return count


def measures(timings: list[Timing]) -> dict:
    """Throughput, latency percentiles (ms) and priority order of one run."""
    first = min(t.submitted for t in timings)
    last = max(t.finished for t in timings)
    out: dict = {"tasks": len(timings), "tasks_per_s": len(timings) / ((last - first) / 1e9)}
    for name, values in (("start", [(t.started - t.submitted) / 1e6 for t in timings]),
                         ("complete", [(t.finished - t.submitted) / 1e6 for t in timings])):
        for q in (50, 95, 99):
            out[f"{name}_p{q}_ms"] = percentile(values, q)
        out[f"{name}_max_ms"] = max(values)
    out["priority_inversions"] = inversions(timings)
    out["critical_before_low"] = out["priority_inversions"] == 0
    return out
