"""`taskfold worker`: run the scheduler (the write side, `streams/`) against the broker.

Start several, anywhere: with the same topic prefix they form one consumer group and
split the partitions of `events`. SIGTERM or Ctrl-C stops a worker cleanly (it leaves
the group, so the others take its partitions at once).
"""

from __future__ import annotations

import asyncio

import typer

from taskfold.cli.connect import resolve
from taskfold.cli.supervision import sigterm_unwinds
from taskfold.config import Settings
from taskfold.ops import logs
from taskfold.cli.probes import probe_socket
from taskfold.ops.probes import url_of


def worker(
    worker_id: str = typer.Option(None, "--worker-id", help="state directory name; default: the first free worker-N"),
    strategy: str = typer.Option("least_loaded", help="how agents are picked: least_loaded, round_robin, weighted, performance"),
    lease_ms: int = typer.Option(30_000, min=1, help="an attempt's lease, renewed by its agent's heartbeats"),
    agent_lost_ms: int = typer.Option(60_000, min=1, help="silence after which an agent is declared lost"),
    start_within_ms: int = typer.Option(30_000, min=1, help="an assignment not started within this goes back"),
    breaker_failures: int = typer.Option(3, min=1, help="consecutive failures that quarantine an agent"),
    breaker_cooldown_ms: int = typer.Option(30_000, min=1, help="quarantine length before one probe task"),
    session_fallback_ms: int = typer.Option(5_000, min=0, help="how long a session task waits for its sticky agent"),
    tick_ms: int = typer.Option(200, min=10, help="how often timers look at leases, timeouts and due tasks"),
    fast_rebalance: bool = typer.Option(False, "--fast-rebalance", help="2 s group sessions on Tansu (tests)"),
    loglevel: str = typer.Option("warning", help="faust's log level: debug, info, warning, error"),
    http_port: int = typer.Option(None, "--http-port", min=0, max=65535,
                                  help="serve /healthz, /readyz, /metrics here (default TASKFOLD_WORKER_HTTP_PORT, "
                                       "else off; 0 picks a free port)"),
    http_host: str = typer.Option(None, "--http-host", help="address of --http-port (default TASKFOLD_HTTP_HOST "
                                                            "or 127.0.0.1)"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
) -> None:
    """Run a scheduler worker: fold the events of its partitions, assign tasks, expire leases."""
    # streams (and faust) load only here: the other commands never pay for them.
    from streams.app import WorkerOptions
    from streams.run import claim_worker_id
    from taskfold.core.scheduling.model import QueuePolicy

    settings = Settings()
    target = resolve(bootstrap, settings)
    try:
        policy = QueuePolicy(strategy=strategy, lease_ms=lease_ms, agent_lost_ms=agent_lost_ms,
                             start_within_ms=start_within_ms, breaker_failures=breaker_failures, breaker_cooldown_ms=breaker_cooldown_ms,
                             session_fallback_ms=session_fallback_ms)
        name = claim_worker_id(settings.state_dir, worker_id)
    except (ValueError, RuntimeError) as exc:
        raise typer.BadParameter(str(exc)) from None
    probes = probe_socket(http_host or settings.http_host,
                          settings.worker_http_port if http_port is None else http_port)

    def report(line: str) -> None:
        logs.status(f"taskfold worker {name}: {line}", logger="taskfold.worker", worker=name)

    options = WorkerOptions(worker_id=name, state_dir=settings.state_dir, policy=policy, tick_ms=tick_ms,
                            fast_rebalance=fast_rebalance, report=report)
    with sigterm_unwinds():  # until faust handles SIGTERM itself, it stops the start-up cleanly (exit 0)
        _run(target, settings.partitions, options, loglevel, probes)


def _run(target, default_partitions: int, options, loglevel: str, probes) -> None:  # noqa: ANN001
    """Find the partitions of `events`, then run the worker until SIGTERM or Ctrl-C."""
    from streams.run import run_worker

    partitions = asyncio.run(_events_partitions(target, default_partitions))
    if probes is not None:
        options.report(f"http: {url_of(probes)} (/healthz, /readyz, /metrics)")
    options.report(f"starting on {target.bootstrap} ({'tansu' if target.tansu else 'kafka'}), {target.topics.events} "
                   f"with {partitions} partitions, state in {options.state_dir / 'workers' / options.worker_id}")
    run_worker(target.bootstrap, target.topics, tansu=target.tansu, partitions=partitions,
               options=options, loglevel=loglevel, probes=probes)
    options.report("stopped")


async def _events_partitions(target, default: int) -> int:
    """The partition count of `events`, creating the topics first if they are missing."""
    from aiokafka.errors import UnknownTopicOrPartitionError

    from taskfold.broker.topics import ensure_topics
    from taskfold.log import LogReader

    async with LogReader(target.bootstrap, tansu=target.tansu) as reader:
        try:
            return len(await reader.partitions(target.topics.events))
        except UnknownTopicOrPartitionError:
            pass
    await ensure_topics(target.bootstrap, target.topics, partitions=default)
    return default
