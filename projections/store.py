"""The projections' store: JSON rows in tables over one rocksdict, written in batches.

A key is `table NUL key`; a value is JSON. A batch of applied records is committed as
one RocksDB write batch together with the offsets it reflects (table `_offsets`), so a
crash leaves the rows and the offsets agreeing: what was committed is never applied
twice, what was not is applied again. Values are JSON, never pickle (`raw_mode`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import AccessType, Options, Rdict, WriteBatch

SEP = "\x00"
OFFSETS = "_offsets"  # key "topic:partition" -> next offset the rows reflect
META = "_meta"  # store-wide facts: format, what the store was built up to
# RocksDB's memtable (default 64 MB, two of them while one flushes): most of a rebuild's
# resident memory. A rebuild writes in big batches, so smaller memtables cost little.
WRITE_BUFFER_BYTES = 16 << 20
_STAGED = object()  # marks a put whose value is encoded at commit
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # json.dumps builds one per call


def row_key(table: str, key: str) -> bytes:
    """The raw key of a row."""
    return f"{table}{SEP}{key}".encode()


def _dumps(value: Any) -> bytes:
    return _encode(value).encode()


class StoreError(RuntimeError):
    """A store that cannot be opened (locked by another process, or missing)."""


class Store:
    """Tables of JSON rows in one RocksDB; reads see committed rows only."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise StoreError(f"no projection store at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        options.create_if_missing(not read_only)
        access = AccessType.read_only() if read_only else AccessType.read_write()
        try:
            self._db = Rdict(str(self.path), options, access_type=access)
        except Exception as exc:  # rocksdict raises a bare Exception with RocksDB's message
            raise StoreError(f"cannot open the projection store at {self.path}: {exc}") from None

    def close(self) -> None:
        """Close the database (idempotent)."""
        db, self._db = self._db, None
        if db is not None:
            db.close()

    @classmethod
    def wipe(cls, path: Path | str) -> None:
        """Delete a store's files (for a rebuild)."""
        shutil.rmtree(path, ignore_errors=True)

    # reads

    def get(self, table: str, key: str) -> Any | None:
        """The row, or None."""
        raw = self._db.get(row_key(table, key))
        return None if raw is None else json.loads(raw)

    def scan(self, table: str, prefix: str = "", *, after: str | None = None,
             limit: int | None = None, reverse: bool = False) -> Iterator[tuple[str, Any]]:
        """(key, row) of a table whose key starts with `prefix`, in key order.

        `after` resumes a page: only keys strictly after it (before it when `reverse`).
        """
        head = row_key(table, prefix)
        strip = len(table) + 1
        it = self._db.iter()
        if not reverse:
            it.seek(row_key(table, after) if after is not None and after >= prefix else head)
        else:
            it.seek_for_prev(row_key(table, after) if after is not None else head + b"\xff" * 4)
        count = 0
        while it.valid() and (limit is None or count < limit):
            raw_key = it.key()
            if not raw_key.startswith(head):
                break
            key = raw_key[strip:].decode()
            if after is None or (key > after if not reverse else key < after):
                yield key, json.loads(it.value())
                count += 1
            it.next() if not reverse else it.prev()

    def raw_get(self, table: str, key: bytes) -> bytes | None:
        """The bytes of a row written with `Batch.raw`, or None."""
        return self._db.get(row_key(table, "") + key)

    def raw_scan(self, table: str) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) bytes of a table whose rows are not JSON-by-us (the fold's rows)."""
        head = row_key(table, "")
        it = self._db.iter()
        it.seek(head)
        while it.valid():
            raw_key = it.key()
            if not raw_key.startswith(head):
                break
            yield raw_key[len(head):], it.value()
            it.next()

    def offsets(self, topic: str) -> dict[int, int]:
        """{partition: next offset the rows reflect} for one topic."""
        out = {}
        for key, value in self.scan(OFFSETS, f"{topic}:"):
            out[int(key.rsplit(":", 1)[1])] = int(value)
        return out

    def meta(self, key: str) -> Any | None:
        """A store-wide fact."""
        return self.get(META, key)

    # writes

    def batch(self) -> Batch:
        """A batch of writes whose reads see its own uncommitted writes."""
        if self.read_only:
            raise StoreError(f"the store at {self.path} is open read-only")
        return Batch(self)

    def drop(self, table: str) -> None:
        """Delete every row of a table (one range deletion)."""
        head = row_key(table, "")
        self._db.delete_range(head, head[:-1] + b"\x01")

    def _commit(self, writes: dict[bytes, bytes | None]) -> None:
        wb = WriteBatch(raw_mode=True)
        for key, value in writes.items():
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        self._db.write(wb)


class Batch:
    """Writes staged in memory, committed atomically; `get` reads through them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: dict[bytes, object] = {}  # bytes, None (delete) or _STAGED
        self._cache: dict[bytes, Any] = {}

    def get(self, table: str, key: str) -> Any | None:
        """The row as this batch would leave it."""
        raw_key = row_key(table, key)
        if raw_key in self._cache:
            return self._cache[raw_key]
        value = self.store.get(table, key)
        self._cache[raw_key] = value
        return value

    def put(self, table: str, key: str, value: Any) -> None:
        """Stage a row (JSON-able value), encoded at commit: a row put many times in one batch
        (a queue's counters, once per event) is encoded once. A value changed after `put` is
        written as changed."""
        raw_key = row_key(table, key)
        self._cache[raw_key] = value
        self.writes[raw_key] = _STAGED

    def delete(self, table: str, key: str) -> None:
        """Stage a deletion."""
        raw_key = row_key(table, key)
        self._cache[raw_key] = None
        self.writes[raw_key] = None

    def raw(self, table: str, key: bytes, value: bytes | None) -> None:
        """Stage a row already in bytes (None deletes it); `get` does not read these."""
        self.writes[row_key(table, "") + key] = value

    def offset(self, topic: str, partition: int, next_offset: int) -> None:
        """Record that the rows reflect the topic's partition up to `next_offset`."""
        self.put(OFFSETS, f"{topic}:{partition}", next_offset)

    def commit(self) -> None:
        """Write everything staged in one RocksDB write batch."""
        if self.writes:
            cache = self._cache
            self.store._commit({k: _dumps(cache[k]) if v is _STAGED else v for k, v in self.writes.items()})
        self.writes = {}
        self._cache = {}
