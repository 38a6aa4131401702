"""The fault suite (issue 5) at sizes of your choosing, by hand.

    .venv/bin/python bench/faults.py                       # every scenario at bench sizes
    .venv/bin/python bench/faults.py burst --burst 10000   # one scenario, one size changed
    .venv/bin/python bench/faults.py --ci                  # the sizes CI uses
    .venv/bin/python bench/faults.py --help                # every size flag

Scenarios: worker-kill, agent-kill, rebalance, duplicates, poison, burst (see
tests/integration/faults_scenarios.py; the tests run the same code at CI sizes), and
offset-gap, which only this script runs (named, it is not part of "all"). Starts its
own broker (TASKFOLD_BOOTSTRAP, a container or Tansu, as the tests do); each scenario gets
fresh topics and its own worker and agent processes, whose output stays in the printed
directory. Prints each outcome, then one JSON line per scenario; exits 1 if any
expectation failed or a scenario could not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
import tempfile
import traceback
import uuid
from pathlib import Path

# The scenarios live beside the integration tests, which run them at CI sizes.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from faults_scenarios import EXTRA, SCENARIOS, Sizes  # noqa: E402
from faults_support import FaultRun, Outcome  # noqa: E402
from taskfold.broker.harness import Broker, start_broker  # noqa: E402
from taskfold.broker.topics import TopicNames, ensure_topics  # noqa: E402
from taskfold.cli.cluster import LocalCluster, LogWatcher  # noqa: E402
from taskfold.log.eventlog import EventLog  # noqa: E402

BENCH = Sizes(worker_kill_tasks=4000, agent_kill_tasks=400, rebalance_backlog=200, duplicate_tasks=2000,
              garbage=180, poison_tasks=400, burst=10_000, gateway_submits=2000, deadline_s=600.0)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: scenario names, --ci, and one flag per size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"which to run (default: all but offset-gap): {', '.join({**SCENARIOS, **EXTRA})}")
    parser.add_argument("--ci", action="store_true", help="start from the CI sizes instead of the bench sizes")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the events topic (default 4)")
    for f in dataclasses.fields(Sizes):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                            help=f"default {getattr(BENCH, f.name)} (CI {getattr(Sizes(), f.name)})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in {**SCENARIOS, **EXTRA}]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join({**SCENARIOS, **EXTRA})}")
    return args


def sizes_of(args: argparse.Namespace) -> Sizes:
    """The sizes the flags ask for."""
    base = Sizes() if args.ci else BENCH
    changed = {f.name: getattr(args, f.name) for f in dataclasses.fields(Sizes) if getattr(args, f.name) is not None}
    return dataclasses.replace(base, **changed)


async def run_one(broker: Broker, name: str, sizes: Sizes, partitions: int, workdir: Path) -> Outcome:
    """One scenario on fresh topics with its own processes; their output goes to workdir/name."""
    topics = TopicNames(f"faults.{uuid.uuid4().hex[:8]}.")
    await ensure_topics(broker.bootstrap, topics, partitions=partitions)
    logs = workdir / name
    logs.mkdir(parents=True)
    cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, logs / "state", log_dir=logs)
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log, LogWatcher(log) as watcher:
        try:
            return await {**SCENARIOS, **EXTRA}[name](FaultRun(cluster, log, watcher, partitions), sizes)
        finally:
            await asyncio.to_thread(cluster.stop_all, 20)


async def main(args: argparse.Namespace) -> int:
    """Run the scenarios one after another; 0 when every expectation held."""
    # SIGTERM (say, from `timeout`) unwinds like Ctrl-C, so the child processes and the broker stop.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    sizes, names = sizes_of(args), args.scenarios or list(SCENARIOS)
    workdir = Path(tempfile.mkdtemp(prefix="taskfold-faults-"))
    print(f"sizes: {dataclasses.asdict(sizes)}\nprocess output under {workdir}", flush=True)
    broker = start_broker()
    results: list[dict] = []
    try:
        for name in names:
            try:
                outcome = await run_one(broker, name, sizes, args.partitions, workdir)
            except Exception as exc:  # noqa: BLE001 (report it and go on with the next scenario)
                traceback.print_exc()
                results.append({"scenario": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
                continue
            print(outcome.report(), flush=True)
            results.append(outcome.as_json())
    finally:
        broker.stop()
    for result in results:
        print(json.dumps(result))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse())))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)
