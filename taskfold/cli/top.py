"""`taskfold top`: queues and agents, redrawn in place every interval until q or Ctrl-C.

Each refresh asks the client for the queues and the agents; over Kafka the client folds only
what was appended since the last refresh. Between refreshes it waits on the keyboard (the
terminal in cbreak mode, restored on the way out), so `q` and Ctrl-C quit at once.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from taskfold.cli.fleet import agent_table, queue_table
from taskfold.cli.reach import BOOTSTRAP, GATEWAY, TOKEN, answering, open_client
from taskfold.clients import Client
from taskfold.core.edge import now_ms

QUIT_KEYS = {"q", "Q"}


def top(interval: float = typer.Option(1.0, min=0.1, max=3600, help="seconds between refreshes"),
        bootstrap: str = BOOTSTRAP, gateway: str = GATEWAY, token: str = TOKEN) -> None:
    """A live view of queues and agents, refreshed in place (q or Ctrl-C quits)."""
    console = Console(highlight=False)
    where = gateway or "the broker"
    try:
        with answering(console), open_client(bootstrap, gateway, token) as client, _keys() as pressed:
            with Live(_screen(client, where, interval), console=console, screen=True, auto_refresh=False,
                      transient=True) as live:
                while not QUIT_KEYS & set(pressed(interval)):
                    live.update(_screen(client, where, interval), refresh=True)
    except KeyboardInterrupt:
        pass


def _screen(client: Client, where: str, interval: float) -> Group:
    now = now_ms()
    header = Text.assemble(("taskfold top", "bold"), f"  {where}  ",
                           datetime.fromtimestamp(now / 1000).strftime("%H:%M:%S"), f"  every {interval:g}s  ", ("q quits", "dim"))
    return Group(header, queue_table(client.queues()), agent_table(client.agents(), now))


@contextmanager
def _keys() -> Iterator:
    """A function that waits up to `timeout` s for keys and returns those pressed ('' if none).

    Ctrl-C counts as `q`: SIGINT only writes to a pipe the wait watches, so it never
    interrupts a frame half-drawn (rich would then keep the rest, and the terminal's
    alternate screen, to itself).
    """
    fd = sys.stdin.fileno() if sys.stdin is not None and not sys.stdin.closed else None
    saved = None
    if fd is not None and os.isatty(fd):
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
    interrupted, wake = os.pipe()
    previous = signal.signal(signal.SIGINT, lambda *_: os.write(wake, b"q"))
    watched = [interrupted] + ([fd] if fd is not None else [])

    def pressed(timeout: float) -> str:
        ready, _, _ = select.select(watched, [], [], timeout)
        keys = ""
        for source in ready:
            data = os.read(source, 64)
            if not data:  # end of input: keep refreshing until Ctrl-C
                watched.remove(source)
            keys += data.decode("utf-8", "replace")
        return keys

    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)
        os.close(interrupted)
        os.close(wake)
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
