"""`taskfold gateway`: the HTTP gateway alone; several can run side by side, each with its own store."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from taskfold.cli.connect import resolve
from taskfold.config import Settings, gateway_store

if TYPE_CHECKING:
    from projections.gateway.auth import Auth


def gateway(
    host: str = typer.Option(None, help="address to listen on (default TASKFOLD_GATEWAY_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, min=0, max=65535,
                             help="port (default TASKFOLD_GATEWAY_PORT or 8080; 0 picks a free one)"),
    no_auth: bool = typer.Option(False, "--no-auth", help="no tokens: everyone is admin (trusted machines only)"),
    tokens_file: Path = typer.Option(None, help="tokens and roles, JSON or TOML (default TASKFOLD_TOKENS_FILE)"),
    store: Path = typer.Option(None, help="the projection store to serve (default <state_dir>/gateway/<name>)"),
    read_only: bool = typer.Option(False, "--read-only", help="serve --store as it is: no log, writes refused"),
    name: str = typer.Option(None, help="names the default store (default TASKFOLD_GATEWAY_NAME, else the port)"),
    fresh: bool = typer.Option(False, "--fresh", help="wipe the store first and rebuild it from the log"),
    ready_file: Path = typer.Option(None, help="write {\"url\", \"pid\"} here once serving"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
) -> None:
    """Serve the HTTP API: writes with read-your-write, reads, SSE, HTTP agents, /docs and /metrics."""
    # Imported here and in the helpers below: other commands should not pay for loading
    # FastAPI, uvicorn and RocksDB.
    from projections.gateway.app import GatewayStartError, gateway_config
    from projections.gateway.run import serve
    from projections.store import StoreError

    settings = Settings()
    _check_read_only(read_only, store, fresh)
    auth = _auth(settings, no_auth, tokens_file)
    sock = _listen(host or settings.gateway_host, settings.gateway_port if port is None else port)
    name = name or settings.gateway_name or str(sock.getsockname()[1])
    connection = {} if read_only else _connection(bootstrap)
    config = gateway_config(settings, store=store or gateway_store(settings, name), auth=auth, read_only=read_only,
                            fresh=fresh, **connection)
    try:
        asyncio.run(serve(config, sock, _on_ready(config.store, read_only, ready_file)))
    except (GatewayStartError, StoreError) as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def _check_read_only(read_only: bool, store: Path | None, fresh: bool) -> None:
    """Refuse the options a read-only gateway cannot honour (exit 2, naming the option)."""
    if read_only and store is None:
        raise typer.BadParameter("--read-only serves a prebuilt store: give it with --store PATH",
                                 param_hint="--read-only")
    if read_only and fresh:
        raise typer.BadParameter("--fresh rebuilds a store from the log; a read-only gateway has no log",
                                 param_hint="--fresh")


def _auth(settings: Settings, no_auth: bool, tokens_file: Path | None) -> Auth:
    """Who may do what: nobody checked with --no-auth, else the tokens from the file or the environment."""
    from projections.gateway.auth import Auth, TokenConfigError

    try:
        return Auth.disabled() if no_auth else Auth.load(
            tokens_file or settings.tokens_file, settings.tokens.get_secret_value() if settings.tokens else None)
    except TokenConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tokens-file or TASKFOLD_TOKENS(_FILE)") from None


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket (exit 2 if the port is taken); bound first, as the default store is named after its port."""
    from projections.gateway.run import bind

    try:
        return bind(host, port)
    except OSError as exc:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc}", param_hint="--port") from None


def _on_ready(store: Path, read_only: bool, ready_file: Path | None) -> Callable[[str], None]:
    """What to do once the gateway serves: say where, and write the ready file if asked."""
    from projections.gateway.run import write_ready_file

    def ready(url: str) -> None:
        what = f"read-only, serving {store}" if read_only else f"store {store}"
        print(f"gateway: {url} (docs at /docs; {what})", flush=True)
        if ready_file is not None:
            write_ready_file(ready_file, url)

    return ready


def _connection(bootstrap: str | None) -> dict:
    """The broker, topics and broker kind that a gateway with a log folds from."""
    target = resolve(bootstrap)
    return {"bootstrap": target.bootstrap, "topics": target.topics, "tansu": target.tansu}
