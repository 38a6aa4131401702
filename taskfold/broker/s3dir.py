"""A durable log for the embedded broker: Tansu on `s3://`, served from a local directory by s3rver.

s3rver (npm, pinned in `tools/package.json` and its lock file; `scripts/install-tools`
installs it into `tools/node_modules`) keeps every object as a file under
`<data_dir>/s3`, so the log and the committed offsets outlive the broker, s3rver and the
machine. `tools/s3dir.js` runs it with the conditional writes Tansu needs (s3rver ignores
them, and a restarted Tansu then reset every watermark and wrote over offset 0). The
settings that work are measured in BROKER.md ("Durable storage"):

1. s3rver needs `NODE_OPTIONS=--openssl-legacy-provider`, or listings of more than 1000
   objects fail with HTTP 500.
2. Tansu reaches it with `AWS_ENDPOINT`, `AWS_ALLOW_HTTP=true` and s3rver's own key pair
   `S3RVER`/`S3RVER` (any other is refused: InvalidAccessKeyId, 403).
3. One broker per directory all the same: `taskfold dev`'s lock on the data directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from taskfold.broker.tansu import _port_open, _tail, free_port, terminate

BUCKET = "taskfold"
INSTALL = "scripts/install-tools"
REPO_ROOT = Path(__file__).resolve().parents[2]  # an editable install's checkout


class S3rverNotFound(RuntimeError):
    """s3rver is not installed where taskfold looks for it."""


class S3rverStartError(RuntimeError):
    """s3rver exited, or did not accept connections in time."""


def find_s3dir() -> list[str]:
    """The command that runs `tools/s3dir.js` (s3rver with conditional writes) with node."""
    node = shutil.which("node")
    for root in (REPO_ROOT, Path.cwd()):
        tools = root / "tools"
        if (tools / "s3dir.js").is_file() and (tools / "node_modules" / "s3rver").is_dir():
            if node is None:
                raise S3rverNotFound("--data-dir runs s3rver, which needs node on PATH; none was found")
            return [node, str(tools / "s3dir.js")]
    raise S3rverNotFound(
        f"--data-dir keeps the log in a directory through s3rver (npm), which is not installed: "
        f"run `{INSTALL}` in the taskfold checkout ({REPO_ROOT}; it needs node and npm)")


@dataclass
class LocalS3:
    """One s3rver process serving `<data_dir>/s3` on a loopback port, with the bucket Tansu writes."""

    data_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    start_timeout: float = 30.0
    port: int | None = None
    preexec: Callable[[], None] | None = None  # run in the child before exec (dev: die with dev)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL (only once started)."""
        return f"http://{self.host}:{self.port}"

    def storage_url(self) -> str:
        """Tansu's `--storage-engine` for this directory."""
        return f"s3://{BUCKET}/"

    def tansu_env(self) -> dict[str, str]:
        """What Tansu needs in its environment to reach this S3 (BROKER.md)."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "S3RVER",
                "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self) -> LocalS3:
        """Start s3rver on a free port and wait until it accepts connections."""
        command = find_s3dir()
        objects = self.data_dir / "s3"
        objects.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
        command += [str(objects), self.host, str(self.port), BUCKET]
        with self.log_path.open("ab") as log:
            # Own session: dev's Ctrl-C reaches dev, which stops the broker before its storage.
            self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True, preexec_fn=self.preexec)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + self.start_timeout
        while not _port_open(self.host, self.port):
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise S3rverStartError(f"s3rver exited with code {code} before serving {self.data_dir / 's3'}; "
                                       f"log {self.log_path}:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise S3rverStartError(f"s3rver did not accept connections on {self.endpoint} within "
                                       f"{self.start_timeout:.0f} s; log {self.log_path}:\n{_tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop s3rver: SIGTERM, wait, then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout)
