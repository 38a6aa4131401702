"""The raw log's value types: what goes in, where it landed, what comes out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record is in its topic: partition and offset."""

    partition: int
    offset: int

    def __str__(self) -> str:
        # `partition:offset` is also the SSE event id (ARCHITECTURE §7).
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse `partition:offset`."""
        partition, sep, offset = text.partition(":")
        if not sep:
            raise ValueError(f"not a position (partition:offset): {text!r}")
        return cls(int(partition), int(offset))


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record to append: key (the queue name for events), value bytes, headers.

    `partition` is normally None, so the key picks it (murmur2, as in the Java client).
    """

    key: str
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """A record read from the log (by a LogReader or a faust agent), with its position and broker timestamp."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None  # the broker's timestamp (ms); None when the consumer did not say
    key: str | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    partitions: int | None = None  # the topic's partition count, when the reader knows it

    @property
    def position(self) -> Position:
        """The record's (partition, offset)."""
        return Position(self.partition, self.offset)

    def header(self, name: str) -> bytes | None:
        """The first header called `name`, if any."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


def poison_record(key: str | None, value: bytes | None, headers: Iterable[tuple[str, bytes]], *, reason: str,
                  topic: str, position: Position, quarantined_at: int) -> RawRecord:
    """The copy of an undecodable record for the `poison` topic: its bytes, and why and where it was set aside."""
    return RawRecord(key=key or "", value=value or b"", headers=list(headers) + [
        ("poison-reason", reason.encode()),
        ("source-topic", topic.encode()),
        ("source-position", str(position).encode()),
        ("quarantined-at", str(quarantined_at).encode()),
    ])
