"""Who fetches what: the Fetch requests of every process of a benchmark run, per reader.

    rm -rf /tmp/fc && mkdir /tmp/fc
    TASKFOLD_FETCHCOUNT_DIR=/tmp/fc PYTHONPATH=bench/fetchcount \
        .venv/bin/python bench/standard.py --tasks 1000 --runs 1 --mode burst
    .venv/bin/python bench/fetchcount.py /tmp/fc

Each row: process, client id, max_wait (ms), topics, Fetch requests, and how many came
back with records (on Tansu each of those lists every batch of the partition, BROKER.md).
The counting hook (bench/fetchcount/sitecustomize.py) is on only when both variables are set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(directory: Path) -> list[tuple[str, str, int, str, int, int]]:
    """One row per (process, reader, max_wait, topics), most Fetches first."""
    found = []
    for path in sorted(directory.glob("*.json")):
        dump = json.loads(path.read_text())
        for key, (sent, with_records) in dump["counts"].items():
            client, wait, topics = key.split("|", 2)
            found.append((dump["process"], client, int(wait), topics, sent, with_records))
    return sorted(found, key=lambda row: -row[4])


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    print(f"{'process':34} {'reader':28} {'wait':>5} {'fetches':>8} {'w/ records':>10}  topics")
    for process, client, wait, topics, sent, with_records in rows(args.directory):
        short = ",".join(t.rsplit(".", 1)[-1] for t in topics.split(","))
        print(f"{process[:34]:34} {client[:28]:28} {wait:5} {sent:8} {with_records:10}  {short}")


if __name__ == "__main__":
    main()
