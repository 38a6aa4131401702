"""Hole detection for live and replayed reads: every offset of a partition, in order, once.

A fold is only as good as its input: a reader that silently skips one record (say, the
TaskSubmitted of a task later assigned to this agent) keeps a state that differs from
everyone else's for ever after. Tansu 0.6.0 under concurrent producers sometimes answers a
Fetch with records past the requested offset, leaving the record at that offset out
(seen by the scheduler worker mid-run and by an agent that then never ran a task assigned
to it three times). Reading the partition again from the missing offset returns it.

On Kafka a hole can also be real: compaction removes records and transaction markers take
offsets. So a hole is read again a few times, and only then accepted as real.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)

REREADS = 3  # times one hole is read again before it is taken for a real one


class HasOffset(Protocol):
    offset: int


M = TypeVar("M", bound=HasOffset)


class Contiguity:
    """The next offset expected per partition, and what to do with each fetched run of records."""

    def __init__(self, topic: str, rereads: int = REREADS, counts: Counter[str] | None = None) -> None:
        self.topic, self.rereads = topic, rereads
        self.next: dict[int, int] = {}
        self.tries: Counter[tuple[int, int]] = Counter()
        self.counts: Counter[str] = counts if counts is not None else Counter()  # "reread", "accepted"

    def expect(self, partition: int, offset: int) -> None:
        """The next offset to read in `partition` (after a seek)."""
        self.next[partition] = offset

    def admit(self, partition: int, messages: Sequence[M]) -> tuple[list[M], int | None]:
        """(the messages to take, in order; the offset to read again from, if a hole cut them short)."""
        taken: list[M] = []
        expected = self.next.get(partition)
        for message in messages:
            if expected is not None and message.offset < expected:
                continue  # already taken (a fetch that overlapped a read-again)
            if expected is not None and message.offset > expected and self._read_again(partition, expected,
                                                                                       message.offset):
                return taken, expected
            taken.append(message)
            expected = message.offset + 1
            self.next[partition] = expected
        return taken, None

    def behind(self, partition: int, position: int) -> int | None:
        """The offset to read again from, when the consumer's position passed offsets never taken."""
        expected = self.next.get(partition)
        if expected is None or position <= expected:
            return None
        if self._read_again(partition, expected, position):
            return expected
        self.next[partition] = position
        return None

    def _read_again(self, partition: int, expected: int, found: int) -> bool:
        """True to read the hole [expected, found) again; False once it is taken for a real one."""
        key = (partition, expected)
        self.tries[key] += 1
        if self.tries[key] <= self.rereads:
            self.counts["reread"] += 1
            log.warning("%s[%s]: a fetch left out offset %s (next: %s); reading again from %s",
                        self.topic, partition, expected, found, expected)
            return True
        self.counts["accepted"] += 1
        log.warning("%s[%s]: offsets %s-%s still missing after %s reads; taking them for compacted records "
                    "or transaction markers (a transactional writer, which taskfold does not support)",
                    self.topic, partition, expected, found - 1, self.rereads)
        return False
