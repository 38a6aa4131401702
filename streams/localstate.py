"""A worker's local RocksDB stores that belong to another log are discarded before it starts.

faust keeps, in each local partition store, the changelog offset the store reflects. When
the log behind it is gone (the embedded broker keeps its log in memory, so every
`taskfold dev` starts a new one), that offset is past the changelog's end and faust's
recovery stops the worker with `ConsistencyError: persisted offset > highwater`. The
store holds nothing the new log knows, so it is removed and recovery starts from zero.

A store is also discarded after a run that did not stop cleanly (SIGKILL, a crash, the
machine going down). faust writes a row to the local store at once and to the changelog
through the producer; a killed worker leaves rows in its store whose changelog records
were never acknowledged. Trusting that store once would be harmless, but the next worker
that recovers from the changelog alone (a new host, a new directory) then gets a row set
that no longer matches the offset row written after it: tasks that completed before the
kill come back in flight, and their seats stay full. So the store is kept only when the
last run left the clean-stop mark (written after faust stopped and flushed its producer);
otherwise recovery starts from the changelog, a prefix of what was written, and the
processor folds the records the rows are missing (streams/processor.py, `_fill`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from aiokafka.errors import UnknownTopicOrPartitionError

from taskfold.log import LogReader

FAUST_OFFSET_KEY = b"__faust\x00offset__"  # faust.stores.rocksdb.Store.offset_key
CLEAN_STOP = "clean-stop"  # in faust's table directory: the last run stopped and flushed


async def changelog_ends(bootstrap: str, tansu: bool, topic: str) -> dict[int, int]:
    """{partition: end} of the changelog topic, from the Fetch high watermark ({} if it does not exist)."""
    async with LogReader(bootstrap, tansu=tansu) as reader:
        try:
            return await reader.end_offsets(topic)
        except UnknownTopicOrPartitionError:
            return {}


def persisted_offset(path: Path) -> int | None:
    """The changelog offset a faust partition store says it reflects (None: no store, or none kept)."""
    if not path.exists():
        return None
    import rocksdict

    # Read-only: takes no lock, and leaves the store exactly as it was.
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True),
                         access_type=rocksdict.AccessType.read_only())
    try:
        raw = db.get(FAUST_OFFSET_KEY)
    finally:
        db.close()
    return int(raw) if raw is not None else None


def discard_stale(
    store_path: Callable[[int], Path], ends: Mapping[int, int], partitions: int, report: Callable[[str], None],
) -> list[int]:
    """Remove the partition stores whose offset is past the changelog's end; returns their partitions."""
    stale = []
    for partition in range(partitions):
        path = store_path(partition)
        offset = persisted_offset(path)
        if offset is not None and offset >= ends.get(partition, 0):
            shutil.rmtree(path)
            stale.append(partition)
    if stale:
        report(f"discarded local stores of partitions {stale}: they reflect a log this broker does not have")
    return stale


def discard_unclean(tabledir: Path, stores: Iterable[Path], report: Callable[[str], None]) -> list[Path]:
    """Remove the partition stores unless the last run left the clean-stop mark; clear the mark for this run."""
    mark = tabledir / CLEAN_STOP
    clean = mark.exists()
    mark.unlink(missing_ok=True)
    if clean:
        return []
    gone = [path for path in stores if path.exists()]
    for path in gone:
        shutil.rmtree(path)
    if gone:
        report(f"discarded {len(gone)} local partition stores: the last run did not stop cleanly, so they may "
               "hold rows the changelog never got; recovering from the changelog")
    return gone


def mark_clean_stop(tabledir: Path) -> None:
    """Say that this run stopped cleanly: its local stores match the changelog."""
    tabledir.mkdir(parents=True, exist_ok=True)
    (tabledir / CLEAN_STOP).touch()
