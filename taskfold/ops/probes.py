"""Health, readiness and Prometheus metrics over HTTP, for processes that load no web framework.

The worker and the agents serve three paths from a small asyncio server inside their own
event loop, so an answer from `/healthz` also says that the loop runs:

* `/healthz`: 200 while the process answers (a hung loop answers nothing: restart it).
* `/readyz`: 200 with what is ready, or 503 naming why not (the owner's `readiness()`).
* `/metrics`: the Prometheus text format of the owner's registry.

The socket is bound before the loop starts (`bind`), so port 0 resolves to a real port
that the process prints at start, and a port in use is a start-up error naming it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 5.0  # a client that sends no request within this is dropped
MAX_REQUEST_BYTES = 8192


@dataclass(frozen=True)
class Readiness:
    """Whether the process is ready, why (or why not), and details for the answer's body."""

    ready: bool
    why: str
    detail: Mapping[str, object] = field(default_factory=dict)


def bound(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one), not yet listening; OSError names the cause."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket on host:port (port 0: a free one)."""
    sock = bound(host, port)
    try:
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    """http://host:port of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ProbeServer:
    """Answers /healthz, /readyz and /metrics on a socket from `bind`, inside the running loop."""

    def __init__(self, sock: socket.socket, registry: CollectorRegistry,
                 readiness: Callable[[], Readiness]) -> None:
        self.sock, self.registry, self.readiness = sock, registry, readiness
        self.url = url_of(sock)

    async def serve(self) -> None:
        """Serve until cancelled; the socket is closed then."""
        server = await asyncio.start_server(self._answer, sock=self.sock, limit=MAX_REQUEST_BYTES)
        async with server:
            await server.serve_forever()

    def route(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": f"method {method} not allowed: use GET"})
        if path == "/healthz":
            return _json(200, {"status": "ok"})
        if path == "/readyz":
            return self._ready()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return _json(404, {"error": f"no such path {path}: try /healthz, /readyz or /metrics"})

    def _ready(self) -> tuple[int, str, bytes]:
        try:
            state = self.readiness()
        except Exception as exc:  # a check that fails is an answer too: not ready, and why
            log.exception("the readiness check failed")
            state = Readiness(False, f"the readiness check failed: {type(exc).__name__}: {exc}")
        body = {"ready": state.ready, ("why" if state.ready else "why_not"): state.why, **state.detail}
        return _json(200 if state.ready else 503, body)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            method, target = _request_line(head)
            status, ctype, body = self.route(method, target.split("?", 1)[0])
            writer.write(_response(status, ctype, b"" if method == "HEAD" else body, len(body)))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ValueError):
            pass  # a client that hung up, sent garbage or nothing: nothing to answer
        finally:
            writer.close()


def _request_line(head: bytes) -> tuple[str, str]:
    """(method, target) of an HTTP request head; ValueError for anything else."""
    method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    return method, target


def _json(status: int, body: object) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _response(status: int, ctype: str, body: bytes, length: int) -> bytes:
    head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n")
    if status == 503:
        head += "Retry-After: 1\r\n"
    return head.encode() + b"\r\n" + body


def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    """A gauge family with one unlabelled sample."""
    family = GaugeMetricFamily(name, text)
    family.add_metric([], value)
    return family


def counter(name: str, text: str, value: float) -> CounterMetricFamily:
    """A counter family with one unlabelled sample."""
    family = CounterMetricFamily(name, text)
    family.add_metric([], value)
    return family
