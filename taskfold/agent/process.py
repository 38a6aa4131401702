"""The agent as a process: its validated queues and slots, and its signal handlers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping

from pydantic import TypeAdapter, ValidationError

from taskfold.events import QueueName

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
