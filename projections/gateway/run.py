"""Serving the gateway with uvicorn: bind, open the runtime, serve, say where once ready.

1. Bind the listening socket first, so port 0 resolves to a real port before anything is
   named after it (the store of an unnamed gateway is named by its port).
2. Open the runtime (store, log, projection caught up): failures here are start-up errors
   with a message, not tracebacks from inside the server.
3. Serve on the bound socket; once uvicorn has started, call `on_ready(url)` (print it,
   write the ready file that `taskfold dev` waits on).
4. SIGINT/SIGTERM stop uvicorn gracefully (a second one stops waiting for open
   connections); the runtime is closed after it, and the process exits normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from projections.gateway.app import GatewayConfig, create_app, open_runtime
from taskfold.ops import logs
from taskfold.ops.probes import bound, url_of

log = logging.getLogger("taskfold.gateway")


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (port 0: a free one), inherited by uvicorn's workers."""
    sock = bound(host, port)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, calling back once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Gateway handles SIGINT/SIGTERM itself: uvicorn would re-raise the signal once it has
        # stopped, killing the process before the runtime (store, log) is closed.
        yield


class Gateway:
    """A gateway served by uvicorn on a socket from `bind`: steps 2-4 of the module docstring."""

    def __init__(self, config: GatewayConfig, sock: socket.socket,
                 on_ready: Callable[[str], None] = lambda url: None, *, log_level: str = "warning") -> None:
        self.config = config
        self.sock = sock
        self.url = url_of(sock)
        self.on_ready = on_ready
        self.log_level = log_level
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None
        self._stop_requested = False

    async def serve(self) -> None:
        """Open the runtime, serve until stopped (SIGINT/SIGTERM or `stop`), close the runtime."""
        self._task = asyncio.current_task()
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal)
        try:
            async with open_runtime(self.config) as rt:
                app = create_app(self.config, runtime=rt)
                config = uvicorn.Config(app, log_level=self.log_level, lifespan="on", access_log=False,
                                        timeout_graceful_shutdown=5,
                                        # JSON logs: uvicorn's records go to the root's one handler
                                        **({"log_config": None} if logs.json_logs() else {}))
                self._server = _Server(config, lambda: self.on_ready(self.url))
                self._server.should_exit = self._stop_requested
                await self._server.serve(sockets=[self.sock])
        except asyncio.CancelledError:
            if not self._stop_requested:
                raise  # cancelled by someone else: not ours to swallow

    def stop(self) -> None:
        """Ask the server to shut down gracefully; safe from any thread (uvicorn polls the flag)."""
        self._stop_requested = True
        if self._server is not None:
            self._server.should_exit = True

    def _on_signal(self) -> None:
        if self._server is None and self._task is not None:
            self._stop_requested = True
            self._task.cancel()  # still starting (say, catching up): stop that, close what is open
            return
        if self._stop_requested and self._server is not None:
            self._server.force_exit = True  # a second signal: stop waiting for open connections
        self.stop()


async def serve(config: GatewayConfig, sock: socket.socket, on_ready: Callable[[str], None],
                *, log_level: str = "warning") -> None:
    """Serve a gateway on a socket from `bind` until SIGINT/SIGTERM."""
    await Gateway(config, sock, on_ready, log_level=log_level).serve()


def write_ready_file(path: Path, url: str) -> None:
    """Record where the gateway answers (written whole, then renamed: a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    partial.replace(path)
