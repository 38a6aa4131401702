"""`taskfold dev`: the whole service on one machine, on the embedded broker."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading

import typer
from rich.console import Console

from taskfold.broker.topics import TopicNames, ensure_topics
from taskfold.cli.render import cli_console
from taskfold.cluster import LocalCluster, wait_for_ready_file
from taskfold.connection import session_file, write_session
from taskfold.config import Settings

GATEWAY_START_S = 60.0


def dev(
    partitions: int = typer.Option(None, min=1, max=1024, help="partitions per topic (default TASKFOLD_PARTITIONS or 6)"),
    demo: bool = typer.Option(False, "--demo", help="also start two demo agents serving the queue `demo`"),
    workers: int = typer.Option(1, min=0, max=8, help="scheduler workers to start"),
    gateway: bool = typer.Option(True, "--gateway/--no-gateway", help="start the HTTP gateway (auth off)"),
    gateway_port: int = typer.Option(None, min=0, max=65535,
                                     help="gateway port (default TASKFOLD_GATEWAY_PORT or 8080; a free one if taken)"),
) -> None:
    """Start the embedded broker, the topics, a scheduler worker, the gateway (and demo agents); Ctrl-C stops all."""
    from taskfold.broker.harness import start_broker

    console = cli_console()
    settings = Settings()
    topics = TopicNames(settings.topic_prefix)
    with console.status("starting the broker"):
        broker = start_broker()
    cluster = None
    try:
        created = asyncio.run(ensure_topics(broker.bootstrap, topics, partitions=partitions or settings.partitions))
        path = write_session(settings, broker.bootstrap, broker.is_tansu)
        console.print(f"[bold green]taskfold dev is up[/]  broker: {broker.kind} at [bold]{broker.bootstrap}[/]")
        console.print(f"topics: {', '.join(f'{t} (new)' if new else t for t, new in created.items())}")
        console.print(f"other commands in this directory find it through {path}; elsewhere use")
        console.print(f"  export TASKFOLD_BOOTSTRAP={broker.bootstrap}")
        if broker.is_tansu:
            console.print("[yellow]the embedded broker keeps its log in memory: history ends when dev stops[/]")
        cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, settings.state_dir,
                               log_dir=settings.state_dir / "logs")
        cluster.log_dir.mkdir(parents=True, exist_ok=True)
        for n in range(1, workers + 1):
            cluster.worker(f"worker-{n}")
        for n in range(1, 3 if demo else 1):
            cluster.agent(f"demo-agent-{n}", "-q", "demo=4")
        url = _start_gateway(console, cluster, settings, gateway_port) if gateway else None
        if url is not None:
            write_session(settings, broker.bootstrap, broker.is_tansu, {"gateway": url})
        if cluster.processes:
            console.print(f"started {', '.join(cluster.processes)} (logs in {cluster.log_dir})")
        if demo:
            console.print("try: taskfold submit demo echo --payload '{\"hello\": \"world\"}'  then  taskfold replay")
        console.print("Ctrl-C to stop.")
        _wait_for_stop()
    finally:
        console.print("stopping")
        if cluster is not None:
            cluster.stop_all(timeout=20)
        session_file(settings).unlink(missing_ok=True)
        broker.stop()


def _start_gateway(console: Console, cluster: LocalCluster, settings: Settings, port: int | None) -> str | None:
    """Start the gateway (auth off, fresh store: this broker's log is new) and wait until it serves."""
    port = settings.gateway_port if port is None else port
    if port and not _port_free(settings.gateway_host, port):
        console.print(f"[yellow]port {port} is taken: the gateway takes a free one[/]")
        port = 0
    ready = settings.state_dir / "gateway.ready.json"
    ready.unlink(missing_ok=True)
    process = cluster.gateway("gateway", "--no-auth", "--fresh", "--host", settings.gateway_host,
                              "--port", str(port), "--ready-file", str(ready))
    with console.status("starting the gateway"):
        found = wait_for_ready_file(process, ready, timeout=GATEWAY_START_S)
    if found is None:
        tail = "\n".join(cluster.output("gateway").splitlines()[-15:])
        console.print(f"[bold red]the gateway did not start[/] (log: {cluster.log_dir / 'gateway.log'}):\n{tail}")
        return None
    ready.unlink(missing_ok=True)
    console.print(f"gateway: {found['url']} (docs at /docs)")
    console.print("[bold red]WARNING: gateway authentication is OFF in taskfold dev: every request is admin.[/] "
                  "Do not expose this port.")
    return found["url"]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _wait_for_stop() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
