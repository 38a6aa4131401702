"""The probes' socket of `taskfold worker` and `taskfold agent` (`--http-port`)."""

from __future__ import annotations

import socket

import typer

from taskfold.ops.probes import bind


def probe_socket(host: str, port: int | None) -> socket.socket | None:
    """Bound now, so that a port in use is refused (exit 2) before anything starts; None when off."""
    if port is None:
        return None
    try:
        return bind(host, port)
    except OSError as exc:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc}", param_hint="--http-port") from None
