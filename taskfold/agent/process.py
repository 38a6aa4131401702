"""The agent as a process: its validated queues and slots, its signal handlers, its log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from pydantic import TypeAdapter, ValidationError

from taskfold.core.events import QueueName

_QUEUE_NAME = TypeAdapter(QueueName)
MAX_SLOTS = 10_000  # AgentJoined.slots allows no more


def queue_slots(queues: Mapping[str, int] | Iterable[str]) -> dict[str, int]:
    """Validated {queue: slots}; a bare list of names means one slot each."""
    pairs = queues.items() if isinstance(queues, Mapping) else ((q, 1) for q in queues)
    slots = {}
    for queue, count in pairs:
        try:
            _QUEUE_NAME.validate_python(queue)
        except ValidationError:
            raise ValueError(f"invalid queue name {queue!r}") from None
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SLOTS:
            raise ValueError(f"slots of queue {queue!r} must be an int from 1 to {MAX_SLOTS}, not {count!r}")
        slots[queue] = count
    if not slots:
        raise ValueError("an agent serves at least one queue")
    return slots


@contextlib.contextmanager
def signal_handlers(callback: Callable[[], None], enabled: bool) -> Iterator[None]:
    """Call `callback` on SIGTERM and SIGINT while inside, where the loop allows it."""
    loop = asyncio.get_running_loop()
    installed = []
    if enabled:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, callback)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


class RepeatFilter(logging.Filter):
    """Collapses repeats: of each kind of record (logger, level, message template) from loggers
    under `prefixes`, the first goes through, then at most one per `window` seconds, which
    says how many it stands for.

    aiokafka logs every failed connection and fetch, about ten lines a second while the
    broker is gone; the agent reports the broker's state itself, one line per retry.
    """

    def __init__(self, prefixes: tuple[str, ...] = ("aiokafka",), window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes, self.window, self._clock = prefixes, window, clock
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}  # kind -> (last let through, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        """True to emit `record`; a repeat within the window is held back and counted."""
        if not record.name.startswith(self.prefixes):
            return True
        kind, now = (record.name, record.levelno, str(record.msg)), self._clock()
        last, held = self._kinds.get(kind, (None, 0))
        if last is not None and now - last < self.window:
            self._kinds[kind] = (last, held + 1)
            return False
        self._kinds[kind] = (now, 0)
        if held:
            record.msg = f"{record.msg} [and {held} more like it in the last {now - last:.0f} s]"
        return True
