"""Microseconds per event to decode (bytes -> pydantic event) and encode (event -> bytes).

    .venv/bin/python bench/codec.py [--repeat 21] [--number 1000] [--candidates 16] [--json]

One realistic sample per event and telemetry type: the hand-built samples of
`tests/fixtures/make_fixtures.py`, with TaskAssigned carrying `--candidates` candidates as
the scheduler writes them for a fleet of that size. Each figure is the median over
`--repeat` runs of the per-call CPU time of `--number` back-to-back calls of
`taskfold.log.wire.decode_record` / `encode_record` (the paths every consumer and producer
takes), and the best run beside it. The machine may be shared: run it a few times and
quote medians.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskfold.core.events import Candidate, TaskAssigned  # noqa: E402
from taskfold.log.wire import Record, decode_record, encode_record  # noqa: E402


def samples(candidates: int) -> dict[str, Record]:
    """The fixture samples, TaskAssigned widened to `candidates` scored candidates."""
    spec = importlib.util.spec_from_file_location("make_fixtures", ROOT / "tests" / "fixtures" / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    records: dict[str, Record] = {**fixtures.sample_events(), **fixtures.sample_records()}
    assigned = records["TaskAssigned"]
    assert isinstance(assigned, TaskAssigned)
    seats = [Candidate(agent_id=f"agent-{i:02d}", score=round(1.0 - i / candidates, 4), load=i % 4, slots=4,
                       eligible=i % 5 != 4, reason=None if i % 5 != 4 else "no free slot")
             for i in range(candidates)]
    records["TaskAssigned"] = assigned.model_copy(update={"candidates": seats})
    return records


def per_call_us(call: Callable[[], object], repeat: int, number: int) -> tuple[float, float]:
    """Median and best over `repeat` runs of the CPU microseconds one call takes, `number` calls a run."""
    # CPU time of this process, not wall time: on a shared machine the wall clock also
    # counts the time other processes hold the core.
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(number):
            call()
        runs.append((time.process_time() - start) / number * 1e6)
    return statistics.median(runs), min(runs)


def measure(records: dict[str, Record], repeat: int, number: int) -> list[dict]:
    """One row per type: encoded size, decode and encode microseconds."""
    rows = []
    for name, record in sorted(records.items()):
        value, _ = encode_record(record)
        assert decode_record(value) == record, f"{name} does not round-trip"
        decode_us, decode_best = per_call_us(lambda: decode_record(value), repeat, number)
        encode_us, encode_best = per_call_us(lambda: encode_record(record), repeat, number)
        rows.append({"type": name, "bytes": len(value), "decode_us": decode_us, "encode_us": encode_us,
                     "decode_best_us": decode_best, "encode_best_us": encode_best})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the table (or JSON lines with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=21, help="runs per figure; the median is printed")
    parser.add_argument("--number", type=int, default=1000, help="calls per run")
    parser.add_argument("--candidates", type=int, default=16, help="candidates in the TaskAssigned sample")
    parser.add_argument("--json", action="store_true", help="print one JSON object per type")
    args = parser.parse_args(argv)
    rows = measure(samples(args.candidates), args.repeat, args.number)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"# python {platform.python_version()}, {platform.machine()}, "
          f"median of {args.repeat} x {args.number} calls, TaskAssigned with {args.candidates} candidates")
    # The best run is the one the other processes on a shared machine disturbed least.
    columns = ["decode_us", "encode_us", "decode_best_us", "encode_best_us"]
    print("| type | bytes | decode µs | encode µs | decode best | encode best |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['type']} | {row['bytes']} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    print("| median of types | | " + " | ".join(f"{statistics.median(r[c] for r in rows):.1f}" for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
