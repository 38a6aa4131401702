"""faust must not crash the worker on a record the producer refuses for its size.

faust writes table rows to their changelog through a buffer (`ProducerBuffer`): a
service task takes each message and awaits `publish_message`. aiokafka refuses a record
larger than `max_request_size` before sending it (`MessageSizeTooLargeError`, raised by
`send`), faust re-raises it as `ProducerSendError`, the buffer's task dies and with it
the worker ("We experienced a crash!"). After a restart the worker folds the same event,
writes the same row and crashes again, so every later task of its partitions stays queued.

The guard drops such a record, logs its topic, key and cause, counts it (`dropped`), and
fails only that message's future. Other send errors are raised as before: a transient
broker error must still stop the worker rather than lose a row silently. The scheduler
keeps its rows small (`taskfold.core.foldrows.slim`, the fold's size rules), so this fires
only for a record no rule foresaw.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError

log = logging.getLogger(__name__)

dropped: Counter = Counter()  # topic -> records dropped for their size, in this process
_ORIGINAL: dict[str, Any] = {}


def too_large(exc: BaseException) -> bool:
    """True if the producer refused a record for its size (directly or wrapped by faust)."""
    return isinstance(exc, MessageSizeTooLargeError) or isinstance(exc.__cause__, MessageSizeTooLargeError)


async def _send_pending(self: Any, fut: Any) -> None:
    # Replaces ProducerBuffer._send_pending (faust 0.15.3), which is this call alone.
    try:
        await fut.message.channel.publish_message(fut, wait=False)
    except Exception as exc:
        if not too_large(exc):
            raise
        message = fut.message
        topic = message.channel.get_topic_name()
        dropped[topic] += 1
        log.error("dropped a record for %s (key %r, %s bytes): %s", topic, (message.key or b"")[:80],
                  len(message.value or b""), exc.__cause__ or exc)
        if not fut.done():
            fut.set_exception(exc)
            fut.exception()  # retrieved: nobody awaits a changelog write


def install() -> None:
    """Guard faust's producer buffer (idempotent)."""
    from faust.transport.producer import ProducerBuffer

    if ProducerBuffer._send_pending is not _send_pending:
        _ORIGINAL.setdefault("_send_pending", ProducerBuffer._send_pending)
        ProducerBuffer._send_pending = _send_pending


def uninstall() -> None:
    """Restore faust's own method (for the test that shows the crash)."""
    from faust.transport.producer import ProducerBuffer

    if "_send_pending" in _ORIGINAL:
        ProducerBuffer._send_pending = _ORIGINAL["_send_pending"]
