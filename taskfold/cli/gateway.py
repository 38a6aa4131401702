"""`taskfold gateway`: the HTTP gateway alone; several can run side by side, each with its own store."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import typer

from taskfold.cli.connect import resolve
from taskfold.config import Settings, gateway_store


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
    # Imported here: other commands should not pay for loading FastAPI, uvicorn and RocksDB.
    from projections.gateway.app import GatewayStartError, gateway_config
    from projections.gateway.auth import Auth, TokenConfigError
    from projections.gateway.run import bind, serve, write_ready_file
    from projections.store import StoreError

    settings = Settings()
    if read_only and store is None:
        raise typer.BadParameter("--read-only serves a prebuilt store: give it with --store PATH",
                                 param_hint="--read-only")
    if read_only and fresh:
        raise typer.BadParameter("--fresh rebuilds a store from the log; a read-only gateway has no log",
                                 param_hint="--fresh")
    try:
        auth = Auth.disabled() if no_auth else Auth.load(
            tokens_file or settings.tokens_file, settings.tokens.get_secret_value() if settings.tokens else None)
    except TokenConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tokens-file or TASKFOLD_TOKENS(_FILE)") from None
    host = host or settings.gateway_host
    port = settings.gateway_port if port is None else port
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc}", param_hint="--port") from None
    name = name or settings.gateway_name or str(sock.getsockname()[1])
    connection = {} if read_only else _connection(bootstrap)
    config = gateway_config(settings, store=store or gateway_store(settings, name), auth=auth, read_only=read_only,
                            fresh=fresh, **connection)

    def ready(url: str) -> None:
        what = f"read-only, serving {config.store}" if read_only else f"store {config.store}"
        print(f"gateway: {url} (docs at /docs; {what})", flush=True)
        if ready_file is not None:
            write_ready_file(ready_file, url)

    try:
        asyncio.run(serve(config, sock, ready))
    except (GatewayStartError, StoreError) as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def _connection(bootstrap: str | None) -> dict:
    target = resolve(bootstrap)
    return {"bootstrap": target.bootstrap, "topics": target.topics, "tansu": target.tansu}
