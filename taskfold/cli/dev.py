"""`taskfold dev`: the whole service on one machine, on the embedded broker."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import typer
from rich.console import Console

from taskfold.broker.harness import Broker, start_broker
from taskfold.broker.s3dir import LocalS3, S3rverNotFound, S3rverStartError
from taskfold.broker.topics import TopicNames, ensure_topics
from taskfold.cli.render import cli_console
from taskfold.cli.cluster import LocalCluster, _terminate_with, wait_for_ready_file
from taskfold.config import Settings
from taskfold.broker.connection import DevLock, DevRunning, session_file, write_session
from taskfold.cli.supervision import Supervisor, sigterm_unwinds

GATEWAY_START_S = 60.0


def dev(
    partitions: int = typer.Option(None, min=1, max=1024, help="partitions per topic (default TASKFOLD_PARTITIONS or 6)"),
    demo: bool = typer.Option(False, "--demo", help="also start two demo agents serving the queue `demo`"),
    workers: int = typer.Option(1, min=0, max=8, help="scheduler workers to start"),
    gateway: bool = typer.Option(True, "--gateway/--no-gateway", help="start the HTTP gateway (auth off)"),
    gateway_port: int = typer.Option(None, min=0, max=65535,
                                     help="gateway port (default TASKFOLD_GATEWAY_PORT or 8080; a free one if taken)"),
    data_dir: Path = typer.Option(None, "--data-dir", file_okay=False,
                                  help="keep the log (and the stores folded from it) in this directory across "
                                       "restarts: Tansu on s3:// through s3rver (scripts/install-tools); "
                                       "default: the log is in memory"),
) -> None:
    """Start the embedded broker, the topics, a scheduler worker, the gateway (and demo agents); Ctrl-C stops all.

    A child that exits is restarted with backoff; one that keeps exiting stops dev (exit 1).
    One dev per state directory (and per --data-dir): a second one is refused (exit 2) and touches nothing.
    """
    console = cli_console()
    settings = Settings()
    if data_dir is not None and settings.bootstrap:
        raise typer.BadParameter(f"keeps the embedded broker's log, but TASKFOLD_BOOTSTRAP={settings.bootstrap} "
                                 "names an external broker, which keeps its own", param_hint="--data-dir")
    try:
        locks = _take_locks(settings, data_dir)  # before anything is started or written
    except DevRunning as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        with sigterm_unwinds():  # a SIGTERM while starting stops what started, the broker too
            code = _run(console, settings, locks[0], Plan(partitions, demo, workers, gateway, gateway_port, data_dir))
    finally:
        for lock in locks:
            lock.release()
    if code:
        raise typer.Exit(code)


def _take_locks(settings: Settings, data_dir: Path | None) -> list[DevLock]:
    """Lock the state directory, and the data directory too: one broker may write a kept log."""
    locks = [DevLock.take(settings)]
    if data_dir is not None:
        try:
            locks.append(DevLock.take(settings.model_copy(update={"state_dir": data_dir})))
        except DevRunning:
            locks[0].release()
            raise
    return locks


@dataclass(frozen=True)
class Plan:
    """What dev was asked to start."""

    partitions: int | None
    demo: bool
    workers: int
    gateway: bool
    gateway_port: int | None
    data_dir: Path | None = None  # the durable log's directory; None keeps the log in memory

    def state_dir(self, settings: Settings) -> Path:
        """Where the children keep their stores: with the log they fold, when the log is kept."""
        return self.data_dir / "state" if self.data_dir else settings.state_dir


def _run(console: Console, settings: Settings, lock: DevLock, plan: Plan) -> int:
    """Run everything until Ctrl-C (0) or a child that cannot be kept up (1); stop it all either way."""
    topics = TopicNames(settings.topic_prefix)
    broker, stop_broker = _start_broker(console, settings, plan.data_dir)
    lock.record(broker=broker.bootstrap)
    cluster = None
    try:
        created = asyncio.run(ensure_topics(broker.bootstrap, topics, partitions=plan.partitions or settings.partitions))
        _announce(console, broker, created, write_session(settings, broker.bootstrap, broker.is_tansu), plan.data_dir)
        # Children die with dev, however it dies: orphans would hold the worker locks of the next dev.
        cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, plan.state_dir(settings),
                               log_dir=settings.state_dir / "logs", die_with_parent=True)
        cluster.log_dir.mkdir(parents=True, exist_ok=True)
        return _run_children(console, settings, broker, cluster, lock, plan)
    finally:
        console.print("stopping")
        if cluster is not None:
            cluster.stop_all(timeout=20)
        session_file(settings).unlink(missing_ok=True)
        stop_broker()


def _run_children(console: Console, settings: Settings, broker: Broker, cluster: LocalCluster, lock: DevLock,
                  plan: Plan) -> int:
    """Start the children, keep dev.json naming them, and supervise them until Ctrl-C (0) or one fails (1)."""
    supervisor = Supervisor(cluster, lambda line: console.print(line, markup=False, highlight=False,
                                                                soft_wrap=True))
    session = _start_children(console, cluster, supervisor, settings, plan)
    lock.record(**session)

    def record() -> None:
        write_session(settings, broker.bootstrap, broker.is_tansu, {**session, "processes": supervisor.pids()})

    record()
    if cluster.processes:
        console.print(f"started {', '.join(cluster.processes)} (logs in {cluster.log_dir})")
    if plan.demo:
        console.print("try: taskfold submit demo echo --payload '{\"hello\": \"world\"}'  then  taskfold replay")
    stop = _stop_on_signals()  # before saying so, or an early Ctrl-C would interrupt, not stop
    console.print("Ctrl-C to stop.")
    return _supervise(console, supervisor, record, stop)


def _start_broker(console: Console, settings: Settings, data_dir: Path | None) -> tuple[Broker, Callable[[], None]]:
    """The broker (on s3rver over `data_dir` when given) and what stops it, storage last."""
    if data_dir is None:
        with console.status("starting the broker"):
            broker = start_broker()
        return broker, broker.stop
    storage = _start_storage(console, settings, data_dir)
    try:
        with console.status("starting the broker"):
            broker = start_broker(storage=storage.storage_url(), storage_env=storage.tansu_env())
    except BaseException:
        storage.stop()
        raise

    def stop() -> None:
        broker.stop()
        storage.stop()  # after the broker: its last writes go to this storage

    return broker, stop


def _start_storage(console: Console, settings: Settings, data_dir: Path) -> LocalS3:
    """s3rver over `data_dir`, for the broker's kept log; exit 2 if it is not installed, 1 if it does not start."""
    try:
        with console.status(f"starting s3rver on {data_dir}"):
            # s3rver dies with dev, however dev dies: a broker orphaned by a SIGKILLed dev then
            # cannot write to the directory the next dev's broker writes.
            return LocalS3(data_dir, settings.state_dir / "logs" / "s3rver.log",
                           preexec=_terminate_with(os.getpid())).start()
    except (S3rverNotFound, S3rverStartError) as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2 if isinstance(exc, S3rverNotFound) else 1) from None


def _announce(console: Console, broker: Broker, created: dict[str, bool], path: Path, data_dir: Path | None) -> None:
    """Say where the broker is, which topics are new, how other commands find dev, and whether the log outlives it."""
    console.print(f"[bold green]taskfold dev is up[/]  broker: {broker.kind} at [bold]{broker.bootstrap}[/]")
    console.print(f"topics: {', '.join(f'{t} (new)' if new else t for t, new in created.items())}")
    console.print(f"other commands in this directory find it through {path}; elsewhere use")
    console.print(f"  export TASKFOLD_BOOTSTRAP={broker.bootstrap}")
    if data_dir is not None:
        console.print(f"the log is kept in {data_dir} (Tansu on s3:// through s3rver): "
                      "it outlives dev and the machine; start again with the same --data-dir", markup=False)
    elif broker.is_tansu:
        console.print("[yellow]the embedded broker keeps its log in memory: history ends when dev stops "
                      "(--data-dir DIR keeps it)[/]")
    elif broker.kind == "container":
        console.print("[yellow]the broker container dev started is removed when dev stops, and its log with it "
                      "(--data-dir DIR keeps the log, on the embedded broker)[/]")


def _start_children(console: Console, cluster: LocalCluster, supervisor: Supervisor, settings: Settings,
                    plan: Plan) -> dict[str, str]:
    """Start and supervise the workers, demo agents and gateway; what dev.json should say of them."""
    for n in range(1, plan.workers + 1):
        supervisor.watch(f"worker-{n}", functools.partial(cluster.worker, f"worker-{n}"))
        cluster.worker(f"worker-{n}")
    for n in range(1, 3 if plan.demo else 1):
        supervisor.watch(f"demo-agent-{n}", functools.partial(cluster.agent, f"demo-agent-{n}", "-q", "demo=4"))
        cluster.agent(f"demo-agent-{n}", "-q", "demo=4")
    url = _start_gateway(console, cluster, settings, plan) if plan.gateway else None
    if url is None:
        return {}
    # A restart keeps the URL: same host and port, and the store it built from this log.
    supervisor.watch("gateway", functools.partial(cluster.gateway, "gateway", "--no-auth", "--host",
                                                  settings.gateway_host, "--port", str(urlsplit(url).port)))
    return {"gateway": url}


def _stop_on_signals() -> threading.Event:
    """An event that Ctrl-C or SIGTERM sets, from now on."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _supervise(console: Console, supervisor: Supervisor, record: Callable[[], None], stop: threading.Event) -> int:
    """Keep the children up until `stop` is set (0), or until one cannot be kept up (1)."""
    pids = supervisor.pids()
    while not stop.wait(0.5):
        reason = supervisor.check()
        if reason is not None:
            console.print(reason, style="bold red", markup=False, soft_wrap=True)
            return 1
        if supervisor.pids() != pids:
            pids = supervisor.pids()
            record()  # dev.json names the processes that run now
    return 0


def _start_gateway(console: Console, cluster: LocalCluster, settings: Settings, plan: Plan) -> str | None:
    """Start the gateway (auth off) and wait until it serves; its store is fresh unless the log is kept."""
    ready = settings.state_dir / "gateway.ready.json"
    ready.unlink(missing_ok=True)
    # A kept log keeps the store folded from it: the gateway resumes at its checkpoint.
    fresh = () if plan.data_dir else ("--fresh",)
    process = cluster.gateway("gateway", "--no-auth", *fresh, "--host", settings.gateway_host,
                              "--port", str(_gateway_port(console, settings, plan)), "--ready-file", str(ready))
    with console.status("starting the gateway"):
        found = wait_for_ready_file(process, ready, timeout=GATEWAY_START_S)
    if found is None:
        tail = "\n".join(cluster.output("gateway").splitlines()[-15:])
        console.print(f"[bold red]the gateway did not start[/] (log: {cluster.log_dir / 'gateway.log'}):\n{tail}")
        return None
    ready.unlink(missing_ok=True)
    console.print(f"gateway: {found['url']} (dashboard at /, docs at /docs)")
    console.print("[bold red]WARNING: gateway authentication is OFF in taskfold dev: every request is admin.[/] "
                  "Do not expose this port.")
    return found["url"]


def _gateway_port(console: Console, settings: Settings, plan: Plan) -> int:
    """The port asked for (--gateway-port, else the setting), or 0 (a free one) if it is taken."""
    port = settings.gateway_port if plan.gateway_port is None else plan.gateway_port
    if port and not _port_free(settings.gateway_host, port):
        console.print(f"[yellow]port {port} is taken: the gateway takes a free one[/]")
        port = 0
    return port


def _port_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port now."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
