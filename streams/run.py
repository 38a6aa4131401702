"""Running scheduler workers: in this process (blocking, as `taskfold worker` does) or as a child.

Several workers with the same topic prefix form one consumer group and split the
partitions of `events`. Each needs its own state directory (RocksDB takes a lock), which
`claim_worker_id` arranges on one machine: it takes the first free `worker-N`, so a
restarted worker gets its old directory and recovers from its local store.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from taskfold.broker.topics import TopicNames
from taskfold.ops import logs

if TYPE_CHECKING:  # faust loads only when a worker runs here, not for spawn()
    from streams.app import WorkerOptions

_LOCKS: list[IO] = []  # held for the life of the process


def claim_worker_id(state_dir: Path, wanted: str | None = None) -> str:
    """Lock `wanted` (or the first free worker-N) under state_dir/workers; raise if it is taken."""
    workers = state_dir / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    names = [wanted] if wanted else (f"worker-{n}" for n in range(1, 1000))
    for name in names:
        lock = (workers / f"{name}.lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _LOCKS.append(lock)
        return name
    raise RuntimeError(f"worker id {wanted!r} is in use by another worker in {workers}")


def run_worker(
    bootstrap: str, topics: TopicNames, *, tansu: bool, partitions: int, options: WorkerOptions,
    loglevel: str = "warning", probes: socket.socket | None = None,
) -> None:
    """Run one worker until SIGTERM or Ctrl-C (faust's Worker handles both and stops cleanly).

    With `probes` (a bound socket), it serves /healthz, /readyz and /metrics there.
    """
    import faust

    from streams.app import build
    from streams.localstate import changelog_ends, discard_stale, discard_unclean, mark_clean_stop

    topology = build(bootstrap, topics, tansu=tansu, partitions=partitions, options=options)
    tabledir = Path(topology.app.conf.tabledir)
    tables = (topology.table, topology.relay_table)
    for table in tables:
        ends = asyncio.run(changelog_ends(bootstrap, tansu, table.changelog_topic_name))
        discard_stale(table.data.partition_path, ends, partitions, options.report)
    discard_unclean(tabledir, [t.data.partition_path(p) for t in tables for p in range(partitions)], options.report)
    # With JSON logs faust must leave the root logger to taskfold.ops.logs, which set it up.
    json_logs = logs.json_logs()
    worker = faust.Worker(topology.app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                          override_logging=not json_logs)
    if json_logs:
        logging.getLogger().setLevel(loglevel.upper())
    worker.spinner = None  # its cursor escapes would garble our lines in logs and in `taskfold dev`
    if probes is not None:
        _serve_probes(worker, topology, topics, options, probes)
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            raise
    mark_clean_stop(tabledir)  # faust has stopped and flushed: the local stores match the changelog
    counts = sorted(topology.processor.counts.items())
    options.report("processed: " + (", ".join(f"{k} {v}" for k, v in counts) or "nothing"))
    relayed = sorted(topology.relay.counts.items())
    options.report("relay: " + (", ".join(f"{k} {v}" for k, v in relayed) or "nothing to resolve"))


def _serve_probes(worker, topology, topics: TopicNames, options: WorkerOptions,  # noqa: ANN001
                  probes: socket.socket) -> None:
    """Serve the probes in the worker's loop from its start (before table recovery), until it stops."""
    from streams.metrics import WorkerProbe
    from taskfold.ops.probes import ProbeServer

    probe = WorkerProbe(topology, topics.events, options.worker_id)
    worker.add_future(ProbeServer(probes, probe.registry, probe.readiness).serve())


def spawn(
    bootstrap: str, *, prefix: str = "taskfold.", tansu: bool | None = None, state_dir: Path | None = None,
    args: list[str] | None = None, env: Mapping[str, str] | None = None, **popen: object,
) -> subprocess.Popen:
    """Start `python -m taskfold worker` as a child process (for `taskfold dev` and tests).

    Stop it with `terminate()` (SIGTERM: it leaves the group and flushes) and `wait()`.
    """
    child_env = {**os.environ, **(env or {}), "TASKFOLD_BOOTSTRAP": bootstrap, "TASKFOLD_TOPIC_PREFIX": prefix}
    if tansu is not None:
        child_env["TASKFOLD_BROKER"] = "tansu" if tansu else "kafka"
    if state_dir is not None:
        child_env["TASKFOLD_STATE_DIR"] = str(state_dir)
    command = [sys.executable, "-m", "taskfold", "worker", *(args or [])]
    return subprocess.Popen(command, env=child_env, **popen)  # type: ignore[arg-type]
