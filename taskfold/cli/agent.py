"""`taskfold agent`: run an agent process, the demo one (`--demo`) or one of yours (`module:attribute`)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import sys

import typer
from rich.console import Console

from taskfold.agent import Agent, NoBroker
from taskfold.agent.demo import demo_agent
from taskfold.agent.process import RepeatFilter
from taskfold.cli.render import JsonLines, status_console
from taskfold.config import Settings
from taskfold.cli.probes import probe_socket
from taskfold.ops.probes import ProbeServer, url_of

# Measured (README, Benchmarks): 4 left a quick agent idle for most of each log round trip on
# Tansu, 16 covers it (64 gained 2% more). The scheduler bounds it by the agent's run time
# (`ahead_bound`), so slow tasks are not held past half their start lease.
DEFAULT_PREFETCH = 16


def agent(
    target: str = typer.Argument(None, help="your agent as module:attribute (an Agent), e.g. myapp.agents:agent"),
    demo: bool = typer.Option(False, "--demo", help="run the demo agent (handlers echo, sleep, flaky, streaming)"),
    agent_id: str = typer.Option(None, "--agent-id", help="agent id (default: demo-<host>-<pid>)"),
    queue: list[str] = typer.Option([], "--queue", "-q", help="queue=slots to serve (repeatable; default demo=4)"),
    label: list[str] = typer.Option([], "--label", help="key=value label of the agent (repeatable)"),
    capability: list[str] = typer.Option([], "--capability", help="capability the agent has (repeatable)"),
    prefetch: int = typer.Option(DEFAULT_PREFETCH, min=0, max=10_000,
                                 help="per queue: tasks held ahead beyond the slots, started as slots free"),
    heartbeat_interval: float = typer.Option(1.0, min=0.05, help="seconds between heartbeats"),
    drain_timeout: float = typer.Option(30.0, min=0.0, help="seconds to let running tasks finish on SIGTERM/Ctrl-C"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log every attempt"),
    http_port: int = typer.Option(None, "--http-port", min=0, max=65535,
                                  help="serve /healthz, /readyz, /metrics here (default TASKFOLD_AGENT_HTTP_PORT, "
                                       "else off; 0 picks a free port)"),
    http_host: str = typer.Option(None, "--http-host", help="address of --http-port (default TASKFOLD_HTTP_HOST "
                                                            "or 127.0.0.1)"),
) -> None:
    """Run an agent until SIGTERM or Ctrl-C, then drain and leave its queues."""
    console = status_console("taskfold.agent", stderr=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # a broker that is gone: one aiokafka line a minute per kind
        handler.addFilter(RepeatFilter())
    if verbose:  # our own attempt lines, not aiokafka's chatter
        logging.getLogger("taskfold").setLevel(logging.INFO)
    if demo == bool(target):
        console.print("[red]give either --demo or your agent as module:attribute[/]")
        raise typer.Exit(2)
    try:
        if demo:
            the_agent = demo_agent(
                agent_id or f"demo-{socket.gethostname()}-{os.getpid()}", _queues(queue or ["demo=4"]),
                labels=dict(_pair(item, "--label") for item in label), capabilities=capability,
                heartbeat_interval=heartbeat_interval, drain_timeout=drain_timeout,
                prefetch=prefetch)
        else:
            the_agent = _load(target)
    except ValueError as exc:
        console.print(f"[red]invalid agent[/]: {exc}")
        raise typer.Exit(2) from None
    probes = _probes(http_host, http_port)
    try:
        asyncio.run(_serve(the_agent, bootstrap, console, probes))
    except NoBroker as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


def _probes(host: str | None, port: int | None) -> socket.socket | None:
    """The probes' socket (bound now: a port in use is refused before the agent joins), or None when off."""
    settings = Settings()
    return probe_socket(host or settings.http_host, settings.agent_http_port if port is None else port)


async def _serve(the_agent: Agent, bootstrap: str | None, console: Console | JsonLines,
                 probes: socket.socket | None) -> None:
    if probes is not None:  # from the start: /readyz says 503 while the agent joins
        from taskfold.agent.metrics import AgentProbe

        probe = AgentProbe(the_agent)
        serving = asyncio.create_task(ProbeServer(probes, probe.registry, probe.readiness).serve())
        console.print(f"agent {the_agent.agent_id}: http: {url_of(probes)} (/healthz, /readyz, /metrics)")
    try:
        await _run(the_agent, bootstrap, console)
    finally:
        if probes is not None:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)


async def _run(the_agent: Agent, bootstrap: str | None, console: Console | JsonLines) -> None:
    run = asyncio.create_task(the_agent.run(bootstrap))
    ready = asyncio.create_task(the_agent.ready.wait())
    await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        queues = ", ".join(f"{q} ({n} slots)" for q, n in the_agent.slots.items())
        handlers = ", ".join(sorted(the_agent.handlers)) or "none"
        console.print(f"agent [bold]{the_agent.agent_id}[/] serves {queues}; handles {handlers}. Ctrl-C to drain and stop.")
    ready.cancel()
    try:
        await run
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # this command itself is being cancelled
            raise
        console.print(f"agent {the_agent.agent_id} stopped at once on a second signal: no drain, no AgentLeft")
        raise typer.Exit(1) from None
    counts = ", ".join(f"{k} {v}" for k, v in sorted(the_agent.stats.items())) or "nothing"
    gone = "left its queues" if the_agent.stats["left"] else "stopped without appending AgentLeft"
    console.print(f"agent {the_agent.agent_id} {gone}; {counts}")


def _queues(items: list[str]) -> dict[str, int]:
    queues = {}
    for item in items:
        name, sep, slots = item.partition("=")
        try:
            queues[name] = int(slots) if sep else 1
        except ValueError:
            raise ValueError(f"--queue: {item!r} is not name=slots") from None
    return queues


def _pair(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"{option}: {item!r} is not key=value")
    return key, value


def _load(target: str) -> Agent:
    module_name, sep, attribute = target.partition(":")
    if not sep:
        raise ValueError(f"{target!r} is not module:attribute")
    # The console script's sys.path starts with its bin directory, not the working
    # directory: put the latter first, as uvicorn and celery do, so `mailer:agent` run
    # next to mailer.py finds it.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {target}: {exc}") from None
    if not isinstance(found, Agent):
        raise ValueError(f"{target} is a {type(found).__name__}, not a taskfold.agent.Agent")
    return found
