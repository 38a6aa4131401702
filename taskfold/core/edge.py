"""What only the edges read: the wall clock, who this process is, and its payload limit.

The builders of requests and reports take these as default arguments, so a caller (or a
test) can pass its own. The fold, the state, the policies, scheduling and the rows never
import this module (an import-linter contract in pyproject.toml checks it): their time
comes from the events they are given.
"""

from __future__ import annotations

import functools
import getpass
import socket
import time

from taskfold.config import Limits


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch: the one place taskfold reads it."""
    return time.time_ns() // 1_000_000


def default_actor() -> str:
    """user@host, the actor recorded on events appended by this process."""
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@functools.cache
def payload_limit() -> int:
    """TASKFOLD_MAX_PAYLOAD_BYTES of this process (read once)."""
    return Limits().max_payload_bytes
